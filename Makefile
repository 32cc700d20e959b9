# SPDX-License-Identifier: Apache-2.0
# Newcomer commands: `make demo` (set up this machine, boot a sandbox) and `make test`.
BUILD ?= build
JOBS  ?= $(shell nproc)

.PHONY: all deps build images demo test test-bindings unit integration bench soak install format clean

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j$(JOBS)

# Guest kernel and root filesystems, cached outside the tree (see docs/images.md).
images: deps
	scripts/images

# Boots a sandbox from the base image and prints what only the guest knows.
demo: build images
	scripts/in-kvm $(BUILD)/examples/hello

# The whole suite: unit tests natively, guest-booting tests where KVM can boot them.
test: build images
	scripts/test $(BUILD)

# Only the Python and Node bindings' guest-booting tests (`make test` runs them too).
test-bindings: build images
	scripts/in-kvm ctest --test-dir $(BUILD) -L bindings --output-on-failure

# Many sandboxes doing execs, file round trips and PTY sessions at once (docs/SECURITY.md);
# SOAK_ARGS="--sandboxes 8 --seconds 120" by default.
SOAK_ARGS ?=
soak: build images
	scripts/in-kvm $(BUILD)/tests/soak $(SOAK_ARGS)

bench: build images
	bench/run $(BUILD)

install: build
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)
