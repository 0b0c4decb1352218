//! Typed shapes: declared channels/strides, and clear errors on wrong inputs.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn_flex::{Flex, FlexDevice};
use exvit_layers::init::trunc_normal;
use exvit_layers::mobilevit_block::{fold, unfold};
use exvit_layers::*;

type B = Flex;
const DEV: FlexDevice = FlexDevice;

#[test]
fn layers_declare_channels_and_stride() {
    let b = BottleneckBlockConfig::new(16, 24, 2.0, 2).init::<B>(&DEV);
    assert_eq!((b.in_channels(), b.out_channels(), b.stride()), (16, 24, 2));
    assert!(!b.has_shortcut());
    assert!(BottleneckBlockConfig::new(16, 16, 2.0, 1).init::<B>(&DEV).has_shortcut());
    let m = MobileVitBlockConfig::new(48, 64, 2).init::<B>(&DEV);
    assert_eq!((m.in_channels(), m.out_channels(), m.stride()), (48, 48, 1));
    let x = Tensor::<B, 4>::zeros([1, 16, 8, 8], &DEV);
    assert_eq!(b.forward(x).dims(), [1, 24, 4, 4]);
}

#[test]
fn wrong_channels_name_the_layer_and_both_shapes() {
    let c = ConvNormActConfig::new(16, 32, 3).with_stride(2).init::<B>(&DEV);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.forward(Tensor::zeros([2, 8, 10, 10], &DEV))));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("Conv2d(16->32, k3, s2)") && msg.contains("[N, 16, H, W]") && msg.contains("[2, 8, 10, 10]"),
        "{msg}"
    );
}

#[test]
fn wrong_widths_name_the_layer() {
    let ln = LayerNormConfig::new(64).init::<B>(&DEV);
    let r =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ln.forward(Tensor::<B, 3>::zeros([2, 5, 32], &DEV))));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("LayerNorm(64)") && msg.contains("[2, 5, 32]"), "{msg}");

    let attn = AttentionConfig::new(64, 4).init::<B>(&DEV);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attn.forward(Tensor::zeros([2, 5, 48], &DEV))));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("Attention(dim 64, heads 4)") && msg.contains("[2, 5, 48]"), "{msg}");

    let bn = BatchNorm2dConfig::new(6).init::<B>(&DEV);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bn.forward(Tensor::zeros([1, 5, 2, 2], &DEV))));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("BatchNorm2d(6)") && msg.contains("[1, 5, 2, 2]"), "{msg}");
}

#[test]
fn check_helpers_return_results() {
    let err = check_channels(&|| "X".into(), [1, 2, 3, 4], 3).unwrap_err();
    assert_eq!(err.to_string(), "X: expected input [N, 3, H, W], got shape [1, 2, 3, 4]");
    assert!(check_last_dim(&|| "Y".into(), [2, 7], 7).is_ok());
}

#[test]
fn unfold_then_fold_is_the_identity_on_even_sizes() {
    let x = Tensor::<B, 4>::random([2, 5, 6, 8], burn::tensor::Distribution::Default, &DEV);
    let (t, grid) = unfold(x.clone(), 2);
    assert_eq!(t.dims(), [2 * 4, 12, 5]);
    assert_eq!(grid, (3, 4));
    let y = fold(t.clone(), 2, 5, grid, 2, [6, 8]);
    let d: f32 = y.sub(x.clone()).abs().max().into_scalar();
    assert_eq!(d, 0.0);
    // Token layout: token (b·P + p, n) holds pixel (b, :, 2·nh + ph, 2·nw + pw), p = 2·ph + pw.
    let xv: Vec<f32> = x.into_data().to_vec().unwrap();
    let tv: Vec<f32> = t.into_data().to_vec().unwrap();
    let (b, c, nh, ph, nw, pw) = (1, 3, 2, 1, 3, 0);
    let pix = xv[((b * 5 + c) * 6 + 2 * nh + ph) * 8 + 2 * nw + pw];
    let tok = tv[((b * 4 + 2 * ph + pw) * 12 + nh * 4 + nw) * 5 + c];
    assert_eq!(pix, tok);
}

#[test]
fn trunc_normal_stays_in_bounds_with_the_right_spread() {
    let t = trunc_normal::<B, 1>([20000], 0.02, -0.04, 0.04, &DEV);
    let v: Vec<f32> = t.into_data().to_vec().unwrap();
    assert!(v.iter().all(|x| x.abs() <= 0.04));
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
    // A normal truncated at ±2σ has std 0.8796σ.
    assert!(mean.abs() < 1e-3 && (std / 0.02 - 0.8796).abs() < 0.02, "mean {mean}, std {std}");
}

#[test]
fn drop_path_is_identity_in_eval_and_drops_whole_samples_in_training() {
    let dp = DropPath::new(0.5);
    let x = Tensor::<B, 3>::ones([64, 4, 4], &DEV);
    assert_eq!(dp.forward(x).sum().into_scalar(), 64.0 * 16.0);
    let x = Tensor::<Autodiff<B>, 3>::ones([64, 4, 4], &DEV);
    let v: Vec<f32> = dp.forward(x).into_data().to_vec().unwrap();
    for s in v.chunks(16) {
        assert!(s.iter().all(|&e| e == 0.0) || s.iter().all(|&e| e == 2.0), "{s:?}");
    }
}
