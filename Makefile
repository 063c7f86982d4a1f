# Builds every data-path program natively on this host (x86_64, aarch64, ...): no arch-specific flags.
#   make                 -> build/sb-*
#   make BUILD=/some/dir -> /some/dir/sb-*   (the orchestrator builds into a content-hashed directory)
# Naming: servers/echo_naive.c -> sb-echo-naive; bpf/echo_sockmap.c (loader) + bpf/echo_sockmap.bpf.c
# (kernel side, embedded into the loader as a bpftool skeleton) -> sb-echo-sockmap. A bpf/X.c is a
# loader exactly when bpf/X.bpf.c exists; every other bpf/*.c (e.g. bpf/sockmap_common.c) is compiled
# to $(BUILD)/bpf-X.o and linked into every loader.

BUILD ?= build
CC ?= gcc
CLANG ?= clang
BPFTOOL ?= bpftool
CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror
TRIPLE := $(shell $(CC) -dumpmachine)

HEADERS := $(wildcard servers/*.h)
SERVER_SRCS := $(filter-out servers/net.c,$(wildcard servers/*.c))
BPF_HEADERS := $(wildcard bpf/*.h)
BPF_LOADERS := $(patsubst %.bpf.c,%.c,$(wildcard bpf/*.bpf.c))
BPF_LIB_SRCS := $(filter-out %.bpf.c $(BPF_LOADERS),$(wildcard bpf/*.c))
BPF_LIB_OBJS := $(patsubst bpf/%.c,$(BUILD)/bpf-%.o,$(BPF_LIB_SRCS))
name = $(BUILD)/sb-$(subst _,-,$(basename $(notdir $(1))))
SERVER_BINS := $(foreach s,$(SERVER_SRCS),$(call name,$(s)))
BPF_BINS := $(foreach s,$(BPF_LOADERS),$(call name,$(s)))

all: $(SERVER_BINS) $(BPF_BINS)

$(BUILD):
	mkdir -p $@

$(BUILD)/net.o: servers/net.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) -c $< -o $@

define server_rule
$(call name,$(1)): $(1) $(BUILD)/net.o $(HEADERS) | $(BUILD)
	$$(CC) $$(CFLAGS) $$(WARN) -Iservers $$< $$(BUILD)/net.o -o $$@ -lm
endef
$(foreach s,$(SERVER_SRCS),$(eval $(call server_rule,$(s))))

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS) | $(BUILD)
	$(CLANG) -O2 -g -target bpf -Wall -Werror -I/usr/include/$(TRIPLE) -Ibpf -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf-%.o: bpf/%.c $(HEADERS) $(BPF_HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) -Iservers -Ibpf -c $< -o $@

define bpf_rule
$(call name,$(1)): $(1) $(BUILD)/$(basename $(notdir $(1))).skel.h $(BUILD)/net.o $(BPF_LIB_OBJS) $(HEADERS) $(BPF_HEADERS) | $(BUILD)
	$$(CC) $$(CFLAGS) $$(WARN) -Iservers -Ibpf -I$$(BUILD) $$< $$(BPF_LIB_OBJS) $$(BUILD)/net.o -o $$@ -lbpf -lelf -lz
endef
$(foreach s,$(BPF_LOADERS),$(eval $(call bpf_rule,$(s))))

clean:
	rm -rf $(BUILD)

.PHONY: all clean
.DELETE_ON_ERROR:
