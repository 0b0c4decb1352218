//! A model's evaluation preprocessing, as timm resolves it (`timm.data.resolve_data_config`
//! then `create_transform(is_training=False)`): input size, crop fraction, interpolation, mean
//! and std, with the user's overrides applied. The model zoo describes its weights' expectations
//! as a [`PretrainedCfg`] (exvit-common); [`DataConfig::from_pretrained`] turns it into the
//! loader's transform and normalisation, so no caller writes that glue.

use exvit_common::pretrained::{ChannelOrder, PretrainedCfg};

use crate::decode::{DecodeError, DEFAULT_MAX_PIXELS};
use crate::resize::Filter;
use crate::rng::Rng;
use crate::source::DataError;
use crate::transform::{apply, EvalTransform, Input, Normalize, Scratch, StageTimes, Transform};

/// timm's eval data config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataConfig {
    /// Output side (timm's `input_size[1]`).
    pub size: usize,
    /// The shorter side is resized to `floor(size / crop_pct)`, then center-cropped to `size`.
    pub crop_pct: f64,
    /// Resize interpolation.
    pub interpolation: Filter,
    /// Mean, std and channel order.
    pub norm: Normalize,
}

/// What a user may change of a model's eval preprocessing (`--resolution`, `--crop-pct`,
/// `--interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalOverrides {
    /// Output side.
    pub resolution: Option<usize>,
    /// Crop fraction.
    pub crop_pct: Option<f64>,
    /// Interpolation.
    pub interpolation: Option<Filter>,
}

impl DataConfig {
    /// From the fields of a timm `pretrained_cfg`: `input_size` `[C, H, W]`, `crop_pct`,
    /// `interpolation` (`bilinear`/`bicubic`), `mean`, `std`, and whether the weights expect
    /// BGR input. An interpolation exvit does not implement is an error naming it.
    ///
    /// # Example
    /// ```
    /// use exvit_data::preprocess::{DataConfig, EvalOverrides};
    ///
    /// // timm's mobilevit_s: 256x256, crop_pct 0.9, bicubic, inputs in [0, 1].
    /// let cfg = DataConfig::timm([3, 256, 256], 0.9, "bicubic", [0.0; 3], [1.0; 3], false).unwrap();
    /// let tf = cfg.eval_transform();
    /// assert_eq!((tf.resize, tf.crop), (284, 256));
    /// let small = cfg.with(&EvalOverrides { resolution: Some(32), crop_pct: Some(1.0), ..Default::default() });
    /// assert_eq!((small.eval_transform().resize, small.eval_transform().crop), (32, 32));
    /// ```
    pub fn timm(
        input_size: [usize; 3],
        crop_pct: f64,
        interpolation: &str,
        mean: [f64; 3],
        std: [f64; 3],
        bgr: bool,
    ) -> Result<Self, DataError> {
        let interpolation =
            interpolation.parse().map_err(|message| DataError::Config { field: "interpolation", message })?;
        if !(crop_pct > 0.0 && crop_pct <= 1.0) {
            return Err(DataError::Config { field: "crop_pct", message: format!("{crop_pct} is not in (0, 1]") });
        }
        Ok(DataConfig {
            size: input_size[1],
            crop_pct,
            interpolation,
            norm: Normalize { mean: mean.map(|v| v as f32), std: std.map(|v| v as f32), bgr },
        })
    }

    /// A model's eval preprocessing from its pretrained config (what the zoo stores for each
    /// model): [`DataConfig::timm`] of its fields.
    pub fn from_pretrained(pre: &PretrainedCfg) -> Result<Self, DataError> {
        let bgr = pre.channel_order == ChannelOrder::Bgr;
        DataConfig::timm(pre.input_size, pre.crop_pct, &pre.interpolation, pre.mean, pre.std, bgr)
    }

    /// This config with `o`'s values where they are set.
    pub fn with(self, o: &EvalOverrides) -> Self {
        DataConfig {
            size: o.resolution.unwrap_or(self.size),
            crop_pct: o.crop_pct.unwrap_or(self.crop_pct),
            interpolation: o.interpolation.unwrap_or(self.interpolation),
            norm: self.norm,
        }
    }

    /// The loader's eval transform (timm's resize-then-center-crop rule).
    pub fn eval_transform(&self) -> EvalTransform {
        EvalTransform::from_crop_pct(self.size, self.crop_pct, self.interpolation)
    }

    /// One encoded image (JPEG, PNG, GIF), preprocessed as the loader's eval path does it:
    /// `3 · size · size` floats, CHW, normalised. For a whole split use the loader.
    pub fn preprocess(&self, encoded: &[u8]) -> Result<Vec<f32>, DecodeError> {
        let tf = Transform::Eval(self.eval_transform());
        let mut out = vec![0f32; 3 * self.size * self.size];
        let mut rng = Rng::keyed(0, &[]);
        apply(
            &tf,
            Input::Encoded(encoded),
            self.size,
            DEFAULT_MAX_PIXELS,
            &mut rng,
            &self.norm,
            &mut Scratch::default(),
            &mut out,
            &mut StageTimes::default(),
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_do_naming_the_field() {
        let e = DataConfig::timm([3, 224, 224], 0.875, "lanczos", [0.0; 3], [1.0; 3], false).unwrap_err();
        assert!(e.to_string().starts_with("interpolation:") && e.to_string().contains("lanczos"), "{e}");
        let e = DataConfig::timm([3, 224, 224], 1.5, "bilinear", [0.0; 3], [1.0; 3], false).unwrap_err();
        assert!(e.to_string().starts_with("crop_pct:"), "{e}");
    }

    #[test]
    fn timm_resize_rule() {
        // timm: scale_size = floor(224 / 0.875) = 256.
        let c = DataConfig::timm([3, 224, 224], 0.875, "bilinear", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], true)
            .unwrap();
        assert_eq!(c.eval_transform(), EvalTransform { resize: 256, crop: 224, filter: Filter::Bilinear });
        assert!(c.norm.bgr && c.norm.mean[0] == 0.485);
        let o = EvalOverrides { interpolation: Some(Filter::Bicubic), ..Default::default() };
        assert_eq!(c.with(&o).eval_transform().filter, Filter::Bicubic);
    }
}
