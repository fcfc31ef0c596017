package photomaker

import (
	"context"
	"errors"

	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// idStage turns ID photos into the ID branch's conditioning.
// TODO(lead): wire to the ID encoder (fuse.go, perceiver.go, idencoder.go, idprompt.go).
type idStage struct{}

func loadIDStage(ctx context.Context, rt *nn.Runtime, adapter *weights.Model, policy nn.TypePolicy) (*idStage, error) {
	return nil, errors.New("PhotoMaker adapters are not wired into the pipeline yet")
}

func (s *idStage) conditioning(ctx context.Context, p *Pipeline, req *Request) (text, id conditioning, err error) {
	return conditioning{}, conditioning{}, errors.New("not wired")
}

func (s *idStage) Close() {}
