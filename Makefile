# Builds every data-path program natively on this host (x86_64, aarch64, ...): no arch-specific flags.
#   make                 -> build/sb-*
#   make BUILD=/some/dir -> /some/dir/sb-*   (the orchestrator builds into a content-hashed directory)
# Naming: servers/echo_naive.c -> sb-echo-naive; bpf/echo_sockmap.c (loader) + bpf/echo_sockmap.bpf.c
# (kernel side, embedded into the loader as a bpftool skeleton) -> sb-echo-sockmap. Every servers/*.c
# is a program except the shared ones in SERVER_LIBS, each compiled once to $(BUILD)/X.o:
# servers/net.c is linked into every program, servers/proxy.c into every proxy (servers/proxy_*.c,
# bpf/proxy_*.c). A bpf/X.c is a loader exactly when bpf/X.bpf.c exists; every other bpf/*.c (e.g.
# bpf/sockmap_common.c) is compiled to $(BUILD)/bpf-X.o and linked into every loader.
# io_uring programs (servers/*_uring.c) link servers/uring.c and liburing and are built only where
# liburing's header is installed (liburing-dev); every other program builds without it.

BUILD ?= build
CC ?= gcc
CLANG ?= clang
BPFTOOL ?= bpftool
CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror
TRIPLE := $(shell $(CC) -dumpmachine)

HEADERS := $(wildcard servers/*.h)
URING_HEADER ?= liburing.h
HAVE_LIBURING := $(shell $(CC) -E -include $(URING_HEADER) -x c /dev/null >/dev/null 2>&1 && echo yes)
URING_SRCS := $(wildcard servers/*_uring.c)
SERVER_LIBS := servers/net.c servers/proxy.c $(if $(HAVE_LIBURING),servers/uring.c)
SERVER_SRCS := $(filter-out $(SERVER_LIBS) servers/uring.c $(if $(HAVE_LIBURING),,$(URING_SRCS)),$(wildcard servers/*.c))
SERVER_LIB_OBJS := $(patsubst servers/%.c,$(BUILD)/%.o,$(SERVER_LIBS))
BPF_HEADERS := $(wildcard bpf/*.h)
BPF_LOADERS := $(patsubst %.bpf.c,%.c,$(wildcard bpf/*.bpf.c))
BPF_LIB_SRCS := $(filter-out %.bpf.c $(BPF_LOADERS),$(wildcard bpf/*.c))
BPF_LIB_OBJS := $(patsubst bpf/%.c,$(BUILD)/bpf-%.o,$(BPF_LIB_SRCS))
name = $(BUILD)/sb-$(subst _,-,$(basename $(notdir $(1))))
# The shared objects program source $(1) links: net.o, proxy.o for a proxy, uring.o for an io_uring
# program.
libs = $(strip $(BUILD)/net.o $(if $(filter proxy_%,$(notdir $(1))),$(BUILD)/proxy.o) \
	$(if $(filter $(URING_SRCS),$(1)),$(BUILD)/uring.o))
# Extra libraries program source $(1) links: liburing for the io_uring programs.
ldlibs = $(if $(filter $(URING_SRCS),$(1)),-luring)
SERVER_BINS := $(foreach s,$(SERVER_SRCS),$(call name,$(s)))
BPF_BINS := $(foreach s,$(BPF_LOADERS),$(call name,$(s)))

all: $(SERVER_BINS) $(BPF_BINS)

$(BUILD):
	mkdir -p $@

$(SERVER_LIB_OBJS): $(BUILD)/%.o: servers/%.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) -c $< -o $@

define server_rule
$(call name,$(1)): $(1) $(call libs,$(1)) $(HEADERS) | $(BUILD)
	$$(CC) $$(CFLAGS) $$(WARN) -Iservers $$< $(call libs,$(1)) -o $$@ $(call ldlibs,$(1)) -lm
endef
$(foreach s,$(SERVER_SRCS),$(eval $(call server_rule,$(s))))

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS) | $(BUILD)
	$(CLANG) -O2 -g -target bpf -Wall -Werror -I/usr/include/$(TRIPLE) -Ibpf -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf-%.o: bpf/%.c $(HEADERS) $(BPF_HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) -Iservers -Ibpf -c $< -o $@

define bpf_rule
$(call name,$(1)): $(1) $(BUILD)/$(basename $(notdir $(1))).skel.h $(call libs,$(1)) $(BPF_LIB_OBJS) $(HEADERS) $(BPF_HEADERS) | $(BUILD)
	$$(CC) $$(CFLAGS) $$(WARN) -Iservers -Ibpf -I$$(BUILD) $$< $$(BPF_LIB_OBJS) $(call libs,$(1)) -o $$@ -lbpf -lelf -lz
endef
$(foreach s,$(BPF_LOADERS),$(eval $(call bpf_rule,$(s))))

clean:
	rm -rf $(BUILD)

.PHONY: all clean
.DELETE_ON_ERROR:
