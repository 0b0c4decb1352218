//! Classify one image with a zoo model, as a crate that depends on exvit-zoo would.
//!
//! ```sh
//! # timm's weights (e.g. the Hugging Face cache's model.safetensors of timm/mobilevit_s.cvnets_in1k):
//! cargo run --release -p exvit-zoo --example classify -- --model mobilevit_s \
//!     --weights model.safetensors --image cat.jpg
//! # no weights: a random init (the top-5 is then noise), on a generated image:
//! cargo run --release -p exvit-zoo --example classify
//! ```
//!
//! Steps: build the model by name ([`exvit_zoo::load_model`], the class count taken from the
//! weights' classifier), preprocess the image the weights' way (the model's
//! [`exvit_zoo::PretrainedCfg`] through exvit-data's `DataConfig`: resize, center crop,
//! normalisation), run the forward pass on burn-flex, print the top-5 with ImageNet names
//! when the head has 1000 classes.

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn_flex::{Flex, FlexDevice};
use exvit_data::preprocess::DataConfig;
use exvit_zoo::{load_model, resolve_model, ModelWeights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut weights, mut image) = ("mobilevit_xxs".to_string(), None::<PathBuf>, None::<PathBuf>);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = value()?,
            "--weights" => weights = Some(value()?.into()),
            "--image" => image = Some(value()?.into()),
            _ => {
                eprintln!("usage: classify [--model NAME|VARIANT.toml] [--weights W.safetensors] [--image IMG]");
                std::process::exit(2);
            }
        }
    }
    let image = match image {
        Some(p) => p,
        None => {
            // A generated image (reddish noise) from exvit-data's test dataset.
            let dir = std::env::temp_dir().join(format!("exvit-classify-{}", std::process::id()));
            exvit_data::synthetic::write_tinted_dataset(&dir, 1, 320, 256)?;
            dir.join("c0/0.png")
        }
    };

    let dev = FlexDevice;
    let net = match &weights {
        Some(w) => load_model::<Flex>(&model, ModelWeights::File(w), 1000, &dev)?,
        None => load_model::<Flex>(&model, ModelWeights::Init { seed: 0 }, 1000, &dev)?,
    };
    let pre = resolve_model(&model, net.num_classes())?.pretrained;
    let data = DataConfig::from_pretrained(&pre)?;
    let pixels = data.preprocess(&std::fs::read(&image)?)?;
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(pixels, [1, 3, data.size, data.size]), &dev);
    let probs: Vec<f32> = softmax(net.forward(x), 1).into_data().to_vec().map_err(|e| format!("{e:?}"))?;

    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let names = exvit_data::classes::imagenet_classes();
    println!("{model} on {} ({}x{}, {:?}):", image.display(), data.size, data.size, data.interpolation);
    for &i in order.iter().take(5) {
        let name = if probs.len() == names.len() { names[i].name } else { "" };
        println!("  {:5.2}%  {i:4}  {name}", 100.0 * probs[i]);
    }
    if weights.is_none() {
        println!("(random weights: pass --weights with timm's safetensors for a real prediction)");
    }
    Ok(())
}
