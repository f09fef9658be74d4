#!/usr/bin/env bash
# The C kernels against their scalar C reference (kernel_test.c), without ARM hardware:
#   native   x86-64 build of the driver: the AVX2 (and AVX-512 VNNI) kernels on this CPU;
#   arm      aarch64 builds (clang --target=aarch64-linux-gnu, and aarch64-linux-gnu-gcc) run under
#            qemu-aarch64 with -cpu cortex-a53 (no dot-product extension: plain NEON, and an sdot must
#            raise SIGILL) and -cpu cortex-a76 / max (dotprod: both paths), then the mutation controls:
#            copies of kernels_neon.c with one deliberate bug each must make the driver fail.
# Usage: run.sh native|arm [BUILD_DIR]. Exit 77 (skipped) when the cross tools are missing for `arm`.
set -euo pipefail
mode=${1:?usage: run.sh native|arm [BUILD_DIR]}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${2:-$root/.build/ckernels-cross}
kernels=$root/Sources/CKernels
driver=$root/Tests/CKernelsCross/kernel_test.c
rm -rf "$out" && mkdir -p "$out"  # fresh objects: the sources may have changed

# The driver (reference arithmetic uncontracted) and the x86 kernel files once per compiler, then
# kernels_neon.c (or a mutant of it) with the package's -O3, linked statically.
build() {  # build COMPILER... -- OUTPUT [KERNEL_FILE]
    local cc=() output neon tag
    while [ "$1" != -- ]; do cc+=("$1"); shift; done
    output=$2; neon=${3:-$kernels/kernels_neon.c}
    tag=$out/common-$(echo "${cc[*]}" | tr -c 'a-zA-Z0-9\n' _)
    if [ ! -f "$tag.done" ]; then
        "${cc[@]}" -O2 -Wall -Wextra -Werror -ffp-contract=off -I"$kernels/include" -c "$driver" -o "$tag.driver.o"
        for source in kernels_avx2 kernels_int8 kernels_rowgroups kernels_kquants; do
            "${cc[@]}" -O3 -Wall -Wextra -Werror -I"$kernels/include" -c "$kernels/$source.c" -o "$tag.$source.o"
        done
        touch "$tag.done"
    fi
    "${cc[@]}" -O3 -Wall -Wextra -Werror -I"$kernels/include" -I"$kernels" -c "$neon" -o "$output.neon.o"
    "${cc[@]}" -static "$tag".*.o "$output.neon.o" -lm -o "$output"
}

if [ "$mode" = native ]; then
    build "${CC:-clang}" -- "$out/kernel_test-native"
    "$out/kernel_test-native"
    exit
fi

missing=""
command -v clang >/dev/null || missing="$missing clang"
command -v aarch64-linux-gnu-gcc >/dev/null || missing="$missing gcc-aarch64-linux-gnu"
[ -f /usr/aarch64-linux-gnu/include/stdio.h ] || missing="$missing libc6-dev-arm64-cross"
qemu=${QEMU_AARCH64:-qemu-aarch64}  # overridable, e.g. to check the skip path
command -v "$qemu" >/dev/null || missing="$missing qemu-user"
if [ -n "$missing" ]; then
    echo "SKIPPED: the emulated NEON tests need$missing (make cross-deps installs them)" >&2
    exit 77
fi

run() {  # run BINARY CPU EXPECT_DOTPROD
    echo "== qemu-aarch64 -cpu $2 $(basename "$1") (emulation)"
    "$qemu" -cpu "$2" "$1" --expect-dotprod "$3"
}

build clang --target=aarch64-linux-gnu -- "$out/kernel_test-arm64-clang"
build aarch64-linux-gnu-gcc -- "$out/kernel_test-arm64-gcc"
run "$out/kernel_test-arm64-clang" cortex-a53 no
run "$out/kernel_test-arm64-clang" cortex-a76 yes
run "$out/kernel_test-arm64-gcc" cortex-a53 no
run "$out/kernel_test-arm64-gcc" max yes

# Mutation controls: each sed plants one bug; the driver must then exit non-zero.
mutations=(
    's/return vpadalq_s16(acc, vmull_high_s8(w\[1\], x\[1\]));/return acc;/'                                # plain int8: last 8 products lost
    's/return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w\[0\], x\[0\]), w\[1\], x\[1\]);/return vdotq_s32(vdupq_n_s32(0), w[0], x[0]);/'  # sdot: half a block
    's/vcvtnq_s32_f32/vcvtaq_s32_f32/'                                                                      # ties away from zero
    's/for (int i = vectorEnd; i < n; i++) {/for (int i = vectorEnd; i < n - 1; i++) {/'                    # dot_rows: tail short by one
    's/vcvt_high_f32_f16(h)/vcvt_f32_f16(vget_low_f16(h))/'                                                 # f16: upper half wrong
    's/\*mw = format == 2 ? -8.0f \* \*dw/*mw = format == 2 ? -7.0f * *dw/'                                   # Q4_0 offset
    # Q5_0, Q5_1 and the K-quants (ck_gemm_kq_neon, and ck_dequantize_row_neon on those formats)
    's/vpadalq_s16(vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x))), vmull_high_s8(w, x))/vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)))/'  # plain group dot: upper 8 products lost
    's/vld1q_s8(x + 16))), scales\[2 \* c + 1\] \* dx)/vld1q_s8(x + 16))), scales[2 * c] * dx)/'          # second group of 16 scaled by the first's
    's/kq_bits_to_bytes(high >> 16)/kq_bits_to_bytes(high >> 15)/'                                         # Q5_*: high bits of 16..31 off by one
    's/kq_field(hmask, 4 \* h + s, 1)/kq_field(hmask, 4 * h + s + 1, 1)/'                                   # Q3_K: wrong hmask bit
    's/\*sc = (p\[j + 4\] & 15) | ((p\[j - 4\] >> 6) << 4);/*sc = p[j + 4] \& 15;/'                           # Q4_K/Q5_K: 6-bit scale loses its top bits
    's/kq_field(qh, 2 \* c + 1, 1)/kq_field(qh, 2 * c, 1)/'                                                 # Q5_K: wrong qh bit for upper nibbles
    's/vsubq_u8(v, vdupq_n_u8(32))/vsubq_u8(v, vdupq_n_u8(31))/'                                           # Q6_K: bias 31 instead of 32
    's/offsets\[g\] = -(dmin \* (float)(b\[g\] >> 4));/offsets[g] = dmin * (float)(b[g] >> 4);/'            # Q2_K: min with the wrong sign
    's/if (hasOffsets) total += ck_dot_neon/if (!hasOffsets) total += ck_dot_neon/'                         # the offsets term dropped where it counts
    's/const int8_t \*x = q + (size_t)t \* k + 32 \* c;/const int8_t *x = q + 32 * c;/'                      # 4-token tile: every token reads token 0
    's/const float32x4_t m = vdupq_n_f32(offset);/const float32x4_t m = vdupq_n_f32(-offset);/'            # dequantize: offsets subtracted
    's/vshrq_n_u8(ql0, 4), vshrq_n_u8(ql1, 4)}/vshrq_n_u8(ql1, 4), vshrq_n_u8(ql0, 4)}/'                     # Q6_K: high nibbles swapped
)
echo "== mutation controls (each must fail)"
for i in "${!mutations[@]}"; do
    mutant=$out/kernels_neon-mutant$i.c
    sed "${mutations[$i]}" "$kernels/kernels_neon.c" > "$mutant"
    if cmp -s "$mutant" "$kernels/kernels_neon.c"; then echo "mutation $i no longer applies: update run.sh" >&2; exit 1; fi
    build clang --target=aarch64-linux-gnu -- "$out/kernel_test-mutant$i" "$mutant"
    if "$qemu" -cpu max "$out/kernel_test-mutant$i" --first-failure >"$out/mutant$i.log" 2>&1; then
        echo "mutation $i (${mutations[$i]}) was NOT caught" >&2; exit 1
    fi
    echo "mutation $i caught: $(grep -m1 FAIL "$out/mutant$i.log" | cut -c1-100)"
done
echo "emulated NEON tests passed (qemu-aarch64: correctness only, not speed)"
