# fuzz.mk - builds the libFuzzer harnesses with clang, apart from the main
# build: the core and the tcp plugin again, instrumented, in $(OUT).
#
# GNU make.  The top Makefile's fuzz targets call it with the configured
# tree's settings (`make fuzz-build`, `make fuzz-smoke`, `make fuzz`);
# by hand:
#   make -f tests/fuzz/fuzz.mk SRC=$PWD OUT=$PWD/build/fuzz \
#        CONFIG_DIR=$PWD/build CORE_LIBS="-lltdl -ljansson -lpthread -lcurl"
# Sources are globbed (core/*.c, plugins/common/*.c, plugins/tcp/*.c,
# plugins/uds/*.c), so a file added to the library needs no change here.

SRC ?= $(CURDIR)
OUT ?= $(CURDIR)/build-fuzz
# The directory holding configure's config.h.
CONFIG_DIR ?= $(OUT)
FUZZ_CC ?= clang
# Flags of the core's dependencies (jansson, curl, ...) and its link line,
# as the configured Makefile has them.  Flags that belong to the main
# build's compiler (sanitizers, -Werror, visibility) are dropped.
CORE_CFLAGS ?=
CORE_LIBS ?= -lltdl -ljansson -lpthread
DEP_CFLAGS = $(filter-out -fsanitize% -fno-sanitize% -Werror -fvisibility=% \
	-O% -g,$(CORE_CFLAGS))

SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
CFLAGS_FUZZ = -g -O1 -std=c11 -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers $(SAN) -fsanitize=fuzzer-no-link
CPPFLAGS_FUZZ = -DHAVE_CONFIG_H -D_GNU_SOURCE -I$(CONFIG_DIR) \
	-I$(SRC)/include -I$(SRC) -DXFER_PLUGIN_DIR='"$(OUT)/plugins"'

CORE_SRCS = $(sort $(wildcard $(SRC)/core/*.c))
STREAM_SRCS = $(sort $(wildcard $(SRC)/plugins/common/*.c))
TCP_SRCS = $(STREAM_SRCS) $(sort $(wildcard $(SRC)/plugins/tcp/*.c))
UDS_SRCS = $(STREAM_SRCS) $(sort $(wildcard $(SRC)/plugins/uds/*.c))
CORE_OBJS = $(patsubst $(SRC)/%.c,$(OUT)/obj/%.o,$(CORE_SRCS))
TCP_OBJS = $(patsubst $(SRC)/%.c,$(OUT)/pic/%.o,$(TCP_SRCS))
UDS_OBJS = $(patsubst $(SRC)/%.c,$(OUT)/pic/%.o,$(UDS_SRCS))
HELPER_OBJS = $(OUT)/obj/tests/fuzz/fuzz-common.o \
	$(OUT)/obj/tests/fuzz/fuzz-stream.o

HARNESSES = metadata config listener listener-auth stream-target \
	stream-target-uds stream-target-auth stream-initiator
BINS = $(addprefix $(OUT)/fuzz-,$(HARNESSES))
PLUGINS = $(OUT)/plugins/xfer_tcp.so $(OUT)/plugins/xfer_uds.so

all: $(BINS) $(PLUGINS)

$(OUT)/obj/%.o: $(SRC)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS_FUZZ) $(DEP_CFLAGS) $(CFLAGS_FUZZ) -MMD -MP \
		-c $< -o $@

# One source, three harnesses: the stream target over tcp, over uds, and
# over tcp with a shared secret.
$(OUT)/obj/tests/fuzz/fuzz-stream-target-uds.o: \
		$(SRC)/tests/fuzz/fuzz-stream-target.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS_FUZZ) -DFZ_UDS=1 $(DEP_CFLAGS) $(CFLAGS_FUZZ) \
		-MMD -MP -c $< -o $@
# The listener again, with a shared secret.
$(OUT)/obj/tests/fuzz/fuzz-listener-auth.o: $(SRC)/tests/fuzz/fuzz-listener.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS_FUZZ) -DFZ_AUTH=1 $(DEP_CFLAGS) $(CFLAGS_FUZZ) \
		-MMD -MP -c $< -o $@
$(OUT)/obj/tests/fuzz/fuzz-stream-target-auth.o: \
		$(SRC)/tests/fuzz/fuzz-stream-target.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS_FUZZ) -DFZ_AUTH=1 $(DEP_CFLAGS) $(CFLAGS_FUZZ) \
		-MMD -MP -c $< -o $@

# The harnesses' helpers compare against the guard pattern: no coverage
# there, or the fuzzer would learn the pattern from the comparisons.
$(HELPER_OBJS): $(OUT)/obj/%.o: $(SRC)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS_FUZZ) $(DEP_CFLAGS) \
		$(filter-out -fsanitize=fuzzer-no-link,$(CFLAGS_FUZZ)) -MMD -MP \
		-c $< -o $@

$(OUT)/pic/%.o: $(SRC)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS_FUZZ) $(CFLAGS_FUZZ) -fPIC -MMD -MP -c $< -o $@

# The plugin leaves the sanitizers' and libFuzzer's symbols undefined: the
# harness that loads it provides them.
$(OUT)/plugins/xfer_tcp.so: $(TCP_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -shared $(SAN) -o $@ $^
$(OUT)/plugins/xfer_uds.so: $(UDS_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -shared $(SAN) -o $@ $^

$(OUT)/fuzz-%: $(OUT)/obj/tests/fuzz/fuzz-%.o $(HELPER_OBJS) $(CORE_OBJS)
	$(FUZZ_CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(CORE_LIBS)

clean:
	rm -rf $(OUT)/obj $(OUT)/pic $(OUT)/plugins $(BINS)

.PHONY: all clean
.SECONDARY:

-include $(CORE_OBJS:.o=.d) $(sort $(TCP_OBJS:.o=.d) $(UDS_OBJS:.o=.d)) \
	$(HELPER_OBJS:.o=.d) \
	$(patsubst %,$(OUT)/obj/tests/fuzz/fuzz-%.d,$(HARNESSES))
