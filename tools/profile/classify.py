"""Splits `perf script` samples of an exvit train step by operation and by what the CPU did.

Each sample gets two labels:
- the operation (from any frame of its call stack, first rule that matches in OPS order):
  which layer or backward step the time belongs to;
- the work (from the leaf frame, first rule in WORK order): GEMM micro-kernels, exvit's
  fused kernel loops (exvit_layers::fast), exp (SiLU,
  softmax), strided copies (flex materialising a permuted or broadcast view), memcpy/memset,
  kernel time (page faults from fresh allocations), allocator, direct conv loops, SIMD
  elementwise kernels, other.
Prints both breakdowns and the cross table. Usage:
    perf script -i perf.data | python3 classify.py
"""
import re
import sys
from collections import Counter, defaultdict

OPS = [
    # exvit's fused burn-flex kernels (exvit_layers::fast), forward and backward apart.
    ("attention (fused): backward", r"exvit_layers::fast::attention::backward"),
    ("attention (fused): forward", r"exvit_layers::fast::attention::forward"),
    ("BatchNorm (fused): backward", r"exvit_layers::fast::batch_norm::backward"),
    ("BatchNorm (fused): forward", r"exvit_layers::fast::batch_norm::forward"),
    ("SiLU (fused): backward", r"exvit_layers::fast::silu_backward|silu_grad_into"),
    ("SiLU (fused): forward", r"exvit_layers::fast::silu_forward|silu_into"),
    ("dense conv: backward", r"exvit_layers::fast::dense::backward"),
    ("dense conv: forward", r"exvit_layers::fast::dense::forward"),
    ("depthwise conv: backward", r"exvit_layers::fast::depthwise::backward"),
    ("depthwise conv: forward", r"exvit_layers::fast::depthwise::forward"),
    ("LayerNorm (fused): backward", r"exvit_layers::fast::layer_norm::backward"),
    ("LayerNorm (fused): forward", r"exvit_layers::fast::layer_norm::(forward|autodiff|layer_norm)"),
    ("linear (fused): backward", r"exvit_layers::fast::linear::(grad_|linear_autodiff|backward)"),
    ("linear (fused): forward", r"exvit_layers::fast::linear::forward"),
    ("1x1 conv: backward", r"exvit_layers::fast::pointwise::(grad_weight|grad_input|backward)"),
    ("1x1 conv: forward", r"exvit_layers::fast::pointwise::forward"),
    ("optimizer (AdamW)", r"burn_optim|AdamW|exvit_train::adamw"),
    ("backward: conv weight gradient", r"conv2d_weight_backward"),
    ("backward: conv input gradient", r"conv2d_x_backward|conv_transpose"),
    ("backward: other ops", r"AutodiffServer::backward|execute_steps"),
    ("forward: depthwise conv", r"conv3d_depthwise_impl"),
    ("forward: conv 1x1", r"conv3d_1x1_impl"),
    ("forward: conv kxk", r"conv3d_impl|conv3d_direct|small_channel|conv3d_f32"),
    ("forward: attention", r"exvit_layers::attention::Attention"),
    ("forward: MLP / linear", r"exvit_layers::attention::Mlp|exvit_layers::linear"),
    ("forward: BatchNorm / LayerNorm", r"exvit_layers::norm"),
    ("forward: unfold / fold / resize", r"mobilevit_block::(unfold|fold)|interpolate"),
    ("loss", r"cross_entropy|CrossEntropy"),
    ("forward: other (activations, residuals, concat)", r"exvit_"),
]

WORK = [
    ("GEMM micro-kernels", r"gemm|pack_generic"),
    ("exvit's fused kernel loops", r"exvit_layers::fast"),
    ("exp (SiLU, softmax)", r"expf|__exp|^exp\b|exp_nonpositive|asuint|sigmoid|top12"),
    ("strided copies (to_contiguous)", r"StridedIter|to_contiguous|copy_contiguous"),
    ("memcpy / memset", r"memmove|memcpy|memset|copy_nonoverlapping|push_mut"),
    ("allocator", r"malloc|free|realloc|_int_|arena"),
    ("direct conv loops, im2col", r"conv3d_f32|conv_transpose3d|conv_plane|depthwise|im2col|conv3d_impl|_mm256_fmadd"),
    ("SIMD / elementwise kernels", r"unary_op|binary_op|macerator|broadcast|call_mut|simd"),
    ("shape bookkeeping", r"num_dims|Shape|Layout"),
]


def main():
    ops, work, cross = Counter(), Counter(), defaultdict(Counter)
    total = 0
    stack, kernel_leaf = [], False

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        op = next((name for name, pat in OPS if any(re.search(pat, f) for f in stack)), "other")
        if kernel_leaf:
            mm = re.search(r"fault|page|mm_|map|alloc|freelist|lru|folio", stack[0])
            w = "kernel: page faults, memory mapping" if mm else "kernel: scheduling, timers, perf"
        else:
            w = next((name for name, pat in WORK if re.search(pat, stack[0])), "other")
        ops[op] += 1
        work[w] += 1
        cross[op][w] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack, kernel_leaf = [], False
        elif line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                if not stack and "kernel.kallsyms" in parts[1]:
                    kernel_leaf = True
                stack.append(parts[1])
    flush()

    def table(title, counts):
        print(f"\n{title:<52} {'samples':>8} {'share':>7}")
        for name, n in counts.most_common():
            print(f"{name:<52} {n:>8} {100.0 * n / max(total, 1):>6.1f}%")

    table("operation", ops)
    table("work (leaf frame)", work)
    print("\noperation -> top work kinds")
    for name, _ in ops.most_common():
        parts = ", ".join(f"{w} {100.0 * n / max(total, 1):.1f}%" for w, n in cross[name].most_common(3))
        print(f"  {name}: {parts}")
    print(f"\ntotal samples: {total}")


if __name__ == "__main__":
    main()
