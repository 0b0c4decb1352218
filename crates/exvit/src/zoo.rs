//! `exvit zoo`: list the models, write initial weights, fetch pretrained ones.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn_flex::{Flex, FlexDevice};
use clap::{Args, Subcommand, ValueEnum};
use exvit_zoo::refinit::reference_init;
use exvit_zoo::{create_model, save_safetensors, zoo_table};

type B = Flex;

#[derive(Subcommand, Debug)]
pub enum ZooCommand {
    /// List the registered models with their parameter counts (total and per top-level module) and
    /// multiply-accumulates per image (at their input size, 256x256, unless --size).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Classes of the classifier the counts assume.
        #[arg(long, default_value_t = 1000)]
        num_classes: usize,
        /// Count the MACs at this input side instead of the models' own (256).
        #[arg(long)]
        size: Option<usize>,
    },
    /// Write a model's initial weights as a timm-compatible safetensors file.
    Init(InitArgs),
    /// Put a model's pretrained weights (timm's, on the Hugging Face hub) in the hub cache timm
    /// uses, unless they are there, and print the file's path (for `--weights` or `--init-from`).
    /// Honours HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE.
    Fetch {
        /// Registry name.
        model: String,
        /// Download again even when cached (the cached copy stays until the new one is checked).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InitKind {
    /// timm byobnet's initialisation (random, seeded by burn's generator).
    Fresh,
    /// exvit's cross-framework reference initialisation from `--seed` (bit-identical to
    /// tools/parity/refinit.py).
    Reference,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Registry name or path of a .toml variant.
    #[arg(long)]
    model: String,
    /// Classes of the classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Which initialisation.
    #[arg(long, value_enum, default_value_t = InitKind::Reference)]
    init: InitKind,
    /// Seed of the reference initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: ZooCommand) -> Result<()> {
    match cmd {
        ZooCommand::List { json, num_classes, size } => {
            if let Some(size) = size {
                anyhow::ensure!(size >= 32, "--size {size}: MobileViT needs at least 32x32");
            }
            let rows = zoo_table::<B>(num_classes, size, &FlexDevice);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("{:<22} {:>10} {:>9} {:>8}  about", "model", "params", "GMACs", "cls-in");
            for r in &rows {
                let gmacs = format!("{:.3}", r.macs as f64 / 1e9);
                println!("{:<22} {:>10} {:>9} {:>8}  {}", r.name, r.params, gmacs, r.classifier_width, r.about);
                let parts: Vec<String> = r.modules.iter().map(|(m, n)| format!("{m} {n}")).collect();
                println!("{:<22} {}", "", parts.join(" | "));
            }
            Ok(())
        }
        ZooCommand::Fetch { model, force } => {
            let cfg = exvit_zoo::resolve_model(&model, 1000).with_context(|| format!("model `{model}`"))?;
            let path = exvit_zoo::hub::fetch(&cfg, &exvit_zoo::hub::HubOptions::from_env(), force)?;
            println!("{}", path.display());
            Ok(())
        }
        ZooCommand::Init(a) => {
            let model = create_model::<B>(&a.model, a.num_classes, &FlexDevice)?;
            let model = match a.init {
                InitKind::Fresh => model,
                InitKind::Reference => reference_init(model, a.seed),
            };
            let meta = HashMap::from([
                ("model".to_string(), a.model.clone()),
                ("init".to_string(), format!("{:?}", a.init).to_lowercase()),
                ("seed".to_string(), a.seed.to_string()),
                ("writer".to_string(), format!("exvit {}", env!("CARGO_PKG_VERSION"))),
            ]);
            save_safetensors(&model, &a.out, meta).with_context(|| format!("saving {}", a.out.display()))?;
            println!("wrote {}", a.out.display());
            Ok(())
        }
    }
}
