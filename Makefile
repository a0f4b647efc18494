# Cohort — build, run and test. `make help` lists the targets.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/cohortd/cohort/daemon.version=$(VERSION)
PLUGINS   := $(patsubst plugins/%/main.go,%,$(wildcard plugins/*/main.go))
CONFIG    ?= config.yaml
BENCHTIME ?= 1x

# Pinned protobuf generators (run offline from the module cache once fetched).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

.PHONY: all help build cohort plugins run test bench proto lint clean

all: build

help:
	@echo "make build   build bin/cohort and every plugin as bin/plugins/<name>"
	@echo "make run     build, then run the daemon on $(CONFIG)"
	@echo "make test    run every test with the race detector"
	@echo "make bench   run the benchmarks, each figure beside its baseline"
	@echo "make proto   regenerate sdk/proto Go code (needs protoc)"
	@echo "make lint    gofmt and go vet"
	@echo "make clean   remove bin/ and var/"

build: cohort plugins

cohort:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/cohort ./daemon/cmd/cohort

plugins:
	@mkdir -p bin/plugins
	@for p in $(PLUGINS); do \
		echo "$(GO) build -o bin/plugins/$$p ./plugins/$$p"; \
		$(GO) build -ldflags "$(LDFLAGS)" -o bin/plugins/$$p ./plugins/$$p || exit 1; \
	done

run: build
	./bin/cohort run --config $(CONFIG)

test:
	$(GO) test -race -count=1 -timeout 15m ./...

bench:
	$(GO) run ./daemon/internal/benchreport -benchtime $(BENCHTIME)

proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	@mkdir -p bin/tools
	GOBIN=$(CURDIR)/bin/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/bin/tools $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/bin/tools:$$PATH protoc -I sdk/proto \
		--go_out=sdk/proto --go_opt=paths=source_relative \
		--go-grpc_out=sdk/proto --go-grpc_opt=paths=source_relative \
		sdk/proto/cohort/plugin/v1/plugin.proto

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin var
