//! `y = x·Wᵀ + b` (then SiLU, when asked) on burn-flex f32: the transformer's `Linear` layers.
//!
//! burn's path is `x.matmul(W.transpose())` and a broadcast add. burn-flex allocates each
//! matmul's output as bytes and then copies it into an aligned buffer (cubecl's
//! `Bytes::from_bytes_vec`: ~2.7% of a mobilevit_xxs forward at batch 16, the Linear layers'
//! outputs copied once more), and the bias and the MLP's SiLU are one pass each. Here each task
//! fills its block of rows with the bias, accumulates the gemm onto it and runs SiLU on the block
//! while it is in cache; the output is allocated uninitialised. Under autodiff the op's backward
//! is three kernels (`dX = dY·W`, `dW = dYᵀ·X`, `db = Σ_rows dY`), and SiLU stays its own op.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::activation::silu_rows;
use super::gemm::{matmul, matmul_threads, Output};
use super::{add_row, back, cast, contiguous, float, is_f32, sum_in_order, wrap, AdFlex};

/// Rows per task: 64 for small inputs (at batch 1, eight tasks per thread balance best), up to
/// 256 for large ones, where each task's gemm packs the weights once for more rows (4% of a
/// mobilevit_xxs forward at batch 16 against 64; alternating trials, docs/performance.md).
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(8 * rayon::current_num_threads()).clamp(64, 256)
}

/// `x [rows, in] · wᵀ` with `w [out, in]` (PyTorch's layout), plus `bias [out]`, then SiLU when
/// `silu`: fused on burn-flex f32, an autodiff op on `Autodiff<Flex>` f32 (when there is a bias),
/// burn's ops elsewhere.
///
/// # Example
/// ```
/// use burn::prelude::*;
/// use burn_flex::Flex;
/// use exvit_layers::fast::linear;
///
/// let dev = Default::default();
/// let x = Tensor::<Flex, 2>::from_floats([[1.0, 2.0]], &dev);
/// let w = Tensor::<Flex, 2>::from_floats([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]], &dev);
/// let b = Tensor::<Flex, 1>::from_floats([0.5, 0.0, 0.0], &dev);
/// let y = linear(x, w, Some(b), false);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![1.5, 3.0, -2.0]);
/// ```
pub fn linear<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, bias: Option<Tensor<B, 1>>, silu: bool) -> Tensor<B, 2> {
    let [_, d_in] = x.dims();
    let [_, w_in] = w.dims();
    assert_eq!(d_in, w_in, "linear: {d_in} input features for a weight of {w_in}");
    let (px, pw, pb) = (float(x), float(w), bias.map(float));
    // Plain burn-flex: everything in the kernel.
    let (px, pw, pb) = match (cast::<_, FlexTensor>(px), cast::<_, FlexTensor>(pw)) {
        (Ok(x), Ok(w)) if is_f32(&x) && is_f32(&w) => {
            let b = pb.map(|p| cast::<_, FlexTensor>(p).unwrap_or_else(|_| unreachable!("one backend")));
            return wrap::<B, 2, _>(forward(&x, &w, b.as_ref(), silu));
        }
        (x, w) => (back(x), back(w), pb),
    };
    // Autodiff over burn-flex, with a bias: the op, then SiLU as its own op.
    let (px, pw, pb) = match (cast::<_, AdFlex>(px), cast::<_, AdFlex>(pw), pb.map(cast::<_, AdFlex>)) {
        (Ok(x), Ok(w), Some(Ok(b))) if is_f32(&x.primitive) && is_f32(&w.primitive) && is_f32(&b.primitive) => {
            let y = wrap::<B, 2, _>(linear_autodiff(x, w, b));
            return if silu { super::silu(y) } else { y };
        }
        (x, w, b) => (back(x), back(w), b.map(back)),
    };
    let x = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(px));
    let w = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(pw));
    linear_generic(x, w, pb.map(|p| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(p))), silu)
}

/// burn's ops: the reference (`tests/fast.rs`) and every other backend's path.
pub fn linear_generic<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    silu: bool,
) -> Tensor<B, 2> {
    let y = x.matmul(w.transpose());
    let y = match bias {
        Some(b) => y + b.unsqueeze(),
        None => y,
    };
    if silu {
        burn::tensor::activation::silu(y)
    } else {
        y
    }
}

/// The fused forward: per block of rows, the bias, the gemm onto it, SiLU.
fn forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>, silu: bool) -> FlexTensor {
    let (rows, d_in) = (x.layout().shape()[0], x.layout().shape()[1]);
    let d_out = w.layout().shape()[0];
    let (xc, wc) = (contiguous(x), contiguous(w));
    let bc = b.map(contiguous);
    let (xs, ws) = (xc.as_slice::<f32>().expect("f32"), wc.as_slice::<f32>().expect("f32"));
    let bs = bc.as_ref().map(|b| b.as_slice::<f32>().expect("f32 bias"));
    if let Some(bs) = bs {
        assert_eq!(bs.len(), d_out, "linear: a bias of {} for {d_out} outputs", bs.len());
    }
    let per = rows_per_task(rows);
    let mut y = Output::new(rows * d_out);
    y.chunks(per * d_out).enumerate().for_each(|(blk, dst)| {
        let m = dst.len() / d_out;
        for row in dst.chunks_exact_mut(d_out) {
            match bs {
                Some(bs) => row.iter_mut().zip(bs).for_each(|(o, &v)| {
                    o.write(v);
                }),
                None => row.iter_mut().for_each(|o| {
                    o.write(0.0);
                }),
            }
        }
        // SAFETY: every element of the block was written just above.
        let dst = unsafe { super::gemm::init(dst) };
        // SAFETY: X's rows of this block and Wᵀ (W read with swapped strides) are in bounds;
        // dst is this task's [m, out] block.
        unsafe {
            matmul(
                (m, d_out, d_in),
                dst.as_mut_ptr(),
                (1, d_out),
                true,
                xs[blk * per * d_in..].as_ptr(),
                (1, d_in),
                ws.as_ptr(),
                (d_in, 1),
                1.0,
            )
        };
        if silu {
            silu_rows(dst);
        }
    });
    // SAFETY: the blocks cover y, each written in full.
    FlexTensor::from_data(TensorData::new(unsafe { y.assume_init() }, [rows, d_out]))
}

/// `dX = dY·W` (`[rows, in]`), per block of rows.
fn grad_input(w: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (d_out, d_in) = (w.layout().shape()[0], w.layout().shape()[1]);
    let rows = dy.layout().shape()[0];
    let (wc, gc) = (contiguous(w), contiguous(dy));
    let (ws, gs) = (wc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"));
    let per = rows_per_task(rows);
    let mut dx = Output::new(rows * d_in);
    dx.chunks(per * d_in).enumerate().for_each(|(blk, dst)| {
        let m = dst.len() / d_in;
        // SAFETY: dY's rows of this block and W are in bounds; gemm writes (does not read) dst,
        // this task's [m, in] block.
        unsafe {
            matmul(
                (m, d_in, d_out),
                dst.as_mut_ptr().cast(),
                (1, d_in),
                false,
                gs[blk * per * d_out..].as_ptr(),
                (1, d_out),
                ws.as_ptr(),
                (1, d_in),
                1.0,
            )
        };
    });
    // SAFETY: the blocks cover dx, each written by gemm.
    FlexTensor::from_data(TensorData::new(unsafe { dx.assume_init() }, [rows, d_in]))
}

/// `dW = dYᵀ·X` (`[out, in]`), one gemm on the pool.
fn grad_weight(x: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (rows, d_in) = (x.layout().shape()[0], x.layout().shape()[1]);
    let d_out = dy.layout().shape()[1];
    let (xc, gc) = (contiguous(x), contiguous(dy));
    let (xs, gs) = (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"));
    let mut dw = Output::new(d_out * d_in);
    let out = dw.shared();
    // SAFETY: dYᵀ is dY read with swapped strides, X is [rows, in]; gemm writes all of dW.
    unsafe {
        matmul_threads(
            (d_out, d_in, rows),
            out.at(0),
            (1, d_in),
            false,
            gs.as_ptr(),
            (d_out, 1),
            xs.as_ptr(),
            (1, d_in),
            1.0,
            rayon::current_num_threads(),
        )
    };
    // SAFETY: written by gemm in full.
    FlexTensor::from_data(TensorData::new(unsafe { dw.assume_init() }, [d_out, d_in]))
}

/// `db = Σ_rows dY` (`[out]`), sums over blocks of rows in f32 (as burn's `sum_dim` would),
/// the blocks added in order.
fn grad_bias(dy: &FlexTensor) -> FlexTensor {
    let d_out = dy.layout().shape()[1];
    let gc = contiguous(dy);
    let gs = gc.as_slice::<f32>().expect("f32");
    let parts: Vec<Vec<f32>> = gs
        .par_chunks(1024 * d_out)
        .map(|blk| {
            let mut acc = vec![0f32; d_out];
            for row in blk.chunks_exact(d_out) {
                add_row(&mut acc, row);
            }
            acc
        })
        .collect();
    FlexTensor::from_data(TensorData::new(sum_in_order(parts, d_out), [d_out]))
}

/// The autodiff op `x·Wᵀ + b`; the input and the weight are its state.
fn linear_autodiff(x: AdFlex, w: AdFlex, b: AdFlex) -> AdFlex {
    #[derive(Debug)]
    struct LinearOp;

    impl Backward<Flex, 3> for LinearOp {
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, w) = ops.state;
            let [px, pw, pb] = ops.parents;
            let dy = grads.consume::<Flex>(&ops.node);
            if let Some(node) = px {
                grads.register::<Flex>(node.id, grad_input(&w, &dy));
            }
            if let Some(node) = pw {
                grads.register::<Flex>(node.id, grad_weight(&x, &dy));
            }
            if let Some(node) = pb {
                grads.register::<Flex>(node.id, grad_bias(&dy));
            }
        }
    }

    let prep = LinearOp
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful();
    match prep {
        OpsKind::Tracked(prep) => {
            let y = forward(&x.primitive, &w.primitive, Some(&b.primitive), false);
            prep.finish((x.primitive, w.primitive), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &w.primitive, Some(&b.primitive), false)),
    }
}
