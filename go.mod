module github.com/gophotomaker/photomaker

go 1.26.8

require (
	github.com/nfnt/resize v0.0.0-20180221191011-83c6a9932646
	github.com/ollama/ollama v0.17.4
	github.com/stretchr/testify v1.12.1
	golang.org/x/image v0.22.0
	golang.org/x/text v0.30.0
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect
