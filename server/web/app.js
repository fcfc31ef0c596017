// PhotoMaker web page: talks to the JSON API of `photomaker serve`.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("gen-form");
  const state = { info: null, photos: [], job: null, source: null, poll: 0, busy: false, upload: null, canceling: false, image: 1, lastDone: 0 };

  function showError(msg) {
    const el = $("error");
    el.textContent = msg || "";
    el.hidden = !msg;
  }

  function setStatus(text, fraction) {
    $("status").textContent = text;
    if (typeof fraction === "number") $("progress").value = Math.max(0, Math.min(1, fraction));
  }

  // setBusy marks the Generate button busy without disabling it: a disabled
  // button would drop the keyboard focus. submit ignores it while busy.
  function setBusy(busy) {
    state.busy = busy;
    const gen = $("generate"), cancel = $("cancel");
    gen.setAttribute("aria-disabled", busy ? "true" : "false");
    gen.setAttribute("aria-busy", busy ? "true" : "false");
    if (!busy && document.activeElement === cancel) gen.focus();
    cancel.hidden = !busy;
  }

  async function readError(res) {
    try {
      const body = await res.json();
      if (body && body.error) return body.error;
    } catch (e) { /* not JSON */ }
    return res.status + " " + res.statusText;
  }

  // ---- model info, styles, sizes, defaults
  async function loadInfo() {
    let info;
    try {
      const res = await fetch("/api/info", { headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error(await readError(res));
      info = await res.json();
    } catch (e) {
      $("model-info").textContent = "Cannot reach the server: " + e.message;
      return;
    }
    state.info = info;
    const d = info.defaults;
    $("model-info").textContent = [info.kind, "on " + info.device, info.model, info.adapter].filter(Boolean).join(" · ");

    const style = $("style");
    for (const name of info.styles) style.add(new Option(name, name, false, name === d.style));

    const size = $("size");
    info.sizes.forEach((s, i) => {
      const selected = s.width === d.width && s.height === d.height;
      size.add(new Option(s.name + " — " + s.width + "×" + s.height, String(i), false, selected));
    });
    size.add(new Option("Custom…", "custom"));
    $("width").value = d.width;
    $("height").value = d.height;
    $("width").max = $("height").max = info.limits.max_side;

    $("steps").value = d.steps;
    $("steps").max = info.limits.max_steps;
    $("guidance").value = d.guidance;
    $("seed").value = d.seed;
    $("n").max = info.limits.max_outputs;
    $("negative").value = d.negative_prompt;
    $("style-strength").value = d.style_strength;
    $("style-strength-value").textContent = d.style_strength;

    if (info.photomaker) {
      $("photos-section").hidden = false;
      $("style-strength-field").hidden = false;
      const t = d.trigger_word;
      $("trigger-hint").textContent = "Put the trigger word “" + t + "” right after the class word, e.g. “a photo of a man " + t + ", wearing a spacesuit”.";
      $("trigger-hint").hidden = false;
      $("prompt").placeholder = "a photo of a woman " + t + ", in a sunlit garden";
    } else {
      $("prompt").placeholder = "a lighthouse at dusk, dramatic clouds";
    }
    checkTrigger();
  }

  // ---- ID photos
  function addPhotos(files) {
    const max = state.info ? state.info.limits.max_images : 8;
    let skipped = 0;
    showError(""); // e.g. "Add at least one ID photo" no longer holds
    for (const f of files) {
      if (!f.type.startsWith("image/")) { skipped++; continue; }
      if (state.photos.length >= max) { showError("At most " + max + " ID photos per request."); break; }
      state.photos.push({ file: f, url: URL.createObjectURL(f) });
    }
    if (skipped) showError(skipped + " file(s) skipped: not images.");
    renderPreviews();
  }

  function renderPreviews() {
    const list = $("previews");
    list.replaceChildren();
    state.photos.forEach((p, i) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = p.url;
      img.alt = "ID photo " + (i + 1) + ": " + p.file.name;
      const rm = document.createElement("button");
      rm.type = "button";
      rm.className = "remove";
      rm.textContent = "×";
      rm.setAttribute("aria-label", "Remove " + p.file.name);
      rm.addEventListener("click", () => {
        URL.revokeObjectURL(p.url);
        state.photos.splice(i, 1);
        renderPreviews();
        // Keep the keyboard focus nearby: the next photo's remove button, or
        // the file input when none is left.
        const rest = $("previews").querySelectorAll("button.remove");
        (rest[Math.min(i, rest.length - 1)] || $("photos")).focus();
      });
      li.append(img, rm);
      list.append(li);
    });
    checkTrigger();
  }

  function escapeRegExp(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

  // Warn when photos are given but the prompt lacks the trigger word.
  function checkTrigger() {
    const warn = $("trigger-warning");
    if (!state.info || !state.info.photomaker) { warn.hidden = true; return true; }
    const t = state.info.defaults.trigger_word;
    const re = new RegExp("(^|[^\\p{L}\\p{N}])" + escapeRegExp(t) + "($|[^\\p{L}\\p{N}])", "u");
    const prompt = $("prompt").value;
    const missing = state.photos.length > 0 && prompt.trim() !== "" && !re.test(prompt);
    warn.textContent = missing ? "The prompt has no trigger word “" + t + "”: add it right after the class word (man, woman, girl, …) so the photos are used." : "";
    warn.hidden = !missing;
    return !missing;
  }

  // ---- generation
  function sizeValues() {
    const v = $("size").value;
    if (v === "custom" || !state.info) return [$("width").value, $("height").value];
    const s = state.info.sizes[Number(v)];
    return [String(s.width), String(s.height)];
  }

  async function submit(ev) {
    ev.preventDefault();
    if (state.busy) return;
    showError("");
    const prompt = $("prompt").value.trim();
    if (!prompt) { showError("Write a prompt first."); $("prompt").focus(); return; }
    if (state.info && state.info.photomaker && state.photos.length === 0) {
      showError("Add at least one ID photo of the person."); $("photos").focus(); return;
    }
    if (!checkTrigger()) { showError($("trigger-warning").textContent); $("prompt").focus(); return; }
    if (state.info && state.info.photomaker) {
      // Refuse here what the server would refuse with 413 after the upload
      // (or by closing the connection, which reads as a network error).
      const limit = state.info.limits.max_upload_bytes;
      const bytes = state.photos.reduce((sum, p) => sum + p.file.size, 0);
      if (limit && bytes > limit) {
        showError("The photos add up to " + formatBytes(bytes) + ", more than the server accepts in one request (" +
          formatBytes(limit) + "): remove some or use smaller photos.");
        return;
      }
    }

    const fd = new FormData();
    const [w, h] = sizeValues();
    fd.append("prompt", prompt);
    fd.append("negative_prompt", $("negative").value);
    fd.append("style", $("style").value);
    fd.append("width", w);
    fd.append("height", h);
    fd.append("steps", $("steps").value);
    fd.append("guidance", $("guidance").value);
    fd.append("seed", $("seed").value || "-1");
    fd.append("n", $("n").value || "1");
    if (state.info && state.info.photomaker) {
      fd.append("style_strength", $("style-strength").value);
      for (const p of state.photos) fd.append("id_image[]", p.file, p.file.name);
    }

    setBusy(true);
    state.canceling = false;
    state.image = 1;
    state.lastDone = 0;
    setStatus("Uploading…", 0);
    const upload = new AbortController();
    state.upload = upload;
    let res;
    try {
      res = await fetch("/api/generate", { method: "POST", body: fd, headers: { Accept: "application/json" }, signal: upload.signal });
    } catch (e) {
      state.upload = null;
      setBusy(false);
      if (upload.signal.aborted) { setStatus("Canceled.", 0); return; }
      setStatus("Idle.", 0);
      showError("Cannot reach the server: " + e.message);
      return;
    }
    state.upload = null;
    if (res.status !== 202) {
      setBusy(false);
      setStatus("Idle.", 0);
      let msg = await readError(res);
      if (res.status === 429) msg = "The server is busy: " + msg;
      showError(msg);
      return;
    }
    const job = await res.json();
    state.job = job.id;
    if (state.canceling) { state.canceling = false; cancel(); } // clicked as the upload ended
    update(job);
    watch(job.id);
  }

  function watch(id) {
    if (!window.EventSource) { poll(id); return; }
    const src = new EventSource("/api/jobs/" + encodeURIComponent(id) + "/events");
    state.source = src;
    const onData = (e) => {
      let job;
      try { job = JSON.parse(e.data); } catch (err) { return; }
      update(job);
    };
    src.addEventListener("progress", onData);
    src.addEventListener("end", (e) => { src.close(); onData(e); });
    src.addEventListener("error", () => {
      // The stream broke before the job ended: poll instead.
      if (state.job === id && src.readyState !== EventSource.OPEN) { src.close(); poll(id); }
    });
  }

  function poll(id) {
    clearTimeout(state.poll);
    const tick = async () => {
      if (state.job !== id) return;
      try {
        const res = await fetch("/api/jobs/" + encodeURIComponent(id), { headers: { Accept: "application/json" } });
        if (res.ok) {
          const job = await res.json();
          update(job);
          if (state.job !== id) return;
        } else if (res.status === 404) {
          finish(); showError("The job was forgotten by the server."); return;
        }
      } catch (e) { /* retry */ }
      state.poll = setTimeout(tick, 1000);
    };
    tick();
  }

  // formatBytes writes a byte count as "740 KiB" or "12.5 MiB".
  function formatBytes(n) {
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1).replace(/\.0$/, "") + " MiB";
    if (n >= 1 << 10) return Math.round(n / (1 << 10)) + " KiB";
    return n + " bytes";
  }

  // formatDuration writes seconds as "45 s" or "6 min 49 s".
  function formatDuration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    return Math.floor(s / 60) + " min " + (s % 60) + " s";
  }

  const stageNames = { encode: "Encoding the prompt", denoise: "Denoising", decode: "Decoding" };

  function update(job) {
    if (job.id !== state.job) return;
    const p = job.progress || {};
    switch (job.status) {
      case "queued":
        setStatus("Waiting in the queue (position " + (job.queue_position || 1) + ")…", 0);
        break;
      case "running": {
        const n = (job.request && job.request.n) || 1;
        let text = stageNames[p.stage] || "Starting";
        if (p.stage === "denoise" && p.total) {
          // The images are denoised one after the other: the step count
          // starting again means the next image.
          if (p.done < state.lastDone && state.image < n) state.image++;
          state.lastDone = p.done;
          if (n > 1) text += " image " + state.image + " of " + n;
          text += ": step " + p.done + " of " + p.total;
        } else if (n > 1) {
          text += " (" + n + " images)";
        }
        if (p.seconds_left >= 1) text += ", about " + formatDuration(p.seconds_left) + " left";
        setStatus(text + "…", p.fraction || 0);
        break;
      }
      case "done":
        setStatus("Done in " + (job.elapsed_ms / 1000).toFixed(1) + " s (seed " + job.seed + ").", 1);
        addToGallery(job);
        finish();
        break;
      case "error":
        setStatus("Failed.", 0);
        showError(job.error || "The generation failed.");
        finish();
        break;
      case "canceled":
        setStatus("Canceled.", 0);
        // Not by this page (e.g. the server shutting down): say why.
        if (!state.canceling && job.error) showError(job.error);
        finish();
        break;
    }
  }

  function finish() {
    if (state.source) { state.source.close(); state.source = null; }
    clearTimeout(state.poll);
    state.job = null;
    setBusy(false);
  }

  function addToGallery(job) {
    $("gallery-empty").hidden = true;
    const items = document.createDocumentFragment(); // in order, newest job first
    job.images.forEach((url, k) => {
      const li = document.createElement("li");
      const fig = document.createElement("figure");
      const link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      const img = document.createElement("img");
      img.className = "result";
      img.src = url;
      img.alt = job.request.prompt;
      img.width = job.request.width;
      img.height = job.request.height;
      img.loading = "lazy";
      link.append(img);
      const cap = document.createElement("figcaption");
      const text = document.createElement("span");
      text.textContent = job.request.prompt + " — " + job.request.style + ", " + job.request.width + "×" + job.request.height + ", seed " + job.seed;
      const dl = document.createElement("a");
      dl.href = url;
      dl.className = "download";
      dl.download = "photomaker-" + job.seed + (job.images.length > 1 ? "-" + (k + 1) : "") + ".png";
      dl.textContent = "Download";
      const reuse = document.createElement("button");
      reuse.type = "button";
      reuse.className = "reuse";
      reuse.textContent = "Use seed";
      reuse.setAttribute("aria-label", "Use seed " + job.seed + " for the next image");
      reuse.addEventListener("click", () => {
        $("seed").value = job.seed;
        $("seed").focus();
      });
      const tools = document.createElement("span");
      tools.className = "tools";
      tools.append(reuse, dl);
      cap.append(text, tools);
      fig.append(link, cap);
      li.append(fig);
      items.append(li);
    });
    $("gallery").prepend(items);
  }

  async function cancel() {
    if (!state.busy || state.canceling) return;
    state.canceling = true;
    const id = state.job;
    if (!id) { // still uploading: submit cancels the job if it was made already
      if (state.upload) state.upload.abort();
      return;
    }
    setStatus("Canceling…");
    try {
      await fetch("/api/jobs/" + encodeURIComponent(id), { method: "DELETE" });
    } catch (e) { /* the stream reports the outcome */ }
  }

  // ---- wiring
  form.addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("photos").addEventListener("change", (e) => { addPhotos(e.target.files); e.target.value = ""; });
  $("prompt").addEventListener("input", checkTrigger);
  // Enter makes a new line in the prompts; Ctrl+Enter (⌘+Enter) generates.
  for (const id of ["prompt", "negative"]) {
    $(id).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
    });
  }
  $("size").addEventListener("change", () => {
    const custom = $("size").value === "custom";
    $("custom-size").hidden = !custom;
    if (custom) $("width").focus();
  });
  $("style-strength").addEventListener("input", (e) => { $("style-strength-value").textContent = e.target.value; });
  const drop = $("drop-zone");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer) addPhotos(e.dataTransfer.files);
  });
  // Leaving the page cancels the job it started: no orphaned work.
  window.addEventListener("pagehide", () => {
    if (state.upload) state.upload.abort();
    if (state.job) fetch("/api/jobs/" + encodeURIComponent(state.job), { method: "DELETE", keepalive: true });
  });
  loadInfo();
})();
