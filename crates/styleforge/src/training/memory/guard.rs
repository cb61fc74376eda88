//! The guard: refuse a run the machine cannot hold, and say which settings would fit.

use super::*;

/// A change of settings that lowers the estimate, as the user would make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The config setting(s), e.g. `training.gradient_checkpointing = true`.
    pub setting: String,
    /// The estimate with it.
    pub estimate: u64,
}

/// The changes that make a run fit in `available` bytes, in order of least quality
/// impact: gradient checkpointing, 8-bit AdamW, a lower resolution (the highest multiple
/// of 64 px that fits), a frozen text encoder. Each single change that fits is listed;
/// when none does alone, the first combination that fits (checkpointing + 8-bit, then
/// with a lower resolution, then with the text encoder frozen, then all). Each is
/// recomputed with [`estimate`]. Empty when nothing fits.
pub fn suggestions(
    models: &ModelConfigs,
    s: &MemorySettings,
    available: u64,
) -> Result<Vec<Suggestion>> {
    let fits = |t: &MemorySettings, words: &[String]| -> Result<Option<Suggestion>> {
        let e = estimate(models, t)?.total;
        Ok((e <= available).then(|| Suggestion {
            setting: words.join(", "),
            estimate: e,
        }))
    };
    // The highest lower resolution that fits, searched in 64 px steps.
    let lower_resolution = |t: &MemorySettings, words: &[String]| -> Result<Option<Suggestion>> {
        let unit = 64.max(8 * models.vae_scale_factor());
        let mut r = (t.resolution.saturating_sub(1) / unit) * unit;
        while r >= unit {
            let mut w = words.to_vec();
            w.push(format!("data.resolution = {r}"));
            if let Some(found) = fits(
                &MemorySettings {
                    resolution: r,
                    ..*t
                },
                &w,
            )? {
                return Ok(Some(found));
            }
            r -= unit;
        }
        Ok(None)
    };
    let mut cheap: Vec<(MemorySettings, String)> = Vec::new();
    if !s.gradient_checkpointing {
        cheap.push((
            MemorySettings {
                gradient_checkpointing: true,
                ..*s
            },
            "training.gradient_checkpointing = true".into(),
        ));
    }
    if s.optimizer != OptimizerKind::AdamW8bit {
        cheap.push((
            MemorySettings {
                optimizer: OptimizerKind::AdamW8bit,
                ..*s
            },
            "optim.optimizer = \"adamw8bit\"".into(),
        ));
    }
    let frozen_te = s.trained.without_text_encoder();
    let te_words = "training.train_text_encoder = false".to_string();

    let mut out = Vec::new();
    for (t, words) in &cheap {
        out.extend(fits(t, std::slice::from_ref(words))?);
    }
    out.extend(lower_resolution(s, &[])?);
    if frozen_te != s.trained {
        let t = MemorySettings {
            trained: frozen_te,
            ..*s
        };
        out.extend(fits(&t, std::slice::from_ref(&te_words))?);
    }
    if !out.is_empty() {
        return Ok(out);
    }
    // Combinations, least impact first.
    let mut all = MemorySettings {
        gradient_checkpointing: true,
        optimizer: OptimizerKind::AdamW8bit,
        ..*s
    };
    let mut words: Vec<String> = cheap.iter().map(|(_, w)| w.clone()).collect();
    if cheap.len() > 1 {
        if let Some(found) = fits(&all, &words)? {
            return Ok(vec![found]);
        }
    }
    if let Some(found) = lower_resolution(&all, &words)? {
        return Ok(vec![found]);
    }
    if frozen_te != s.trained {
        all.trained = frozen_te;
        words.push(te_words);
        if let Some(found) = fits(&all, &words)? {
            return Ok(vec![found]);
        }
        if let Some(found) = lower_resolution(&all, &words)? {
            return Ok(vec![found]);
        }
    }
    Ok(Vec::new())
}

/// The settings as a short phrase for the log.
fn describe(s: &MemorySettings) -> String {
    let trained = match s.trained {
        Trained::Full { text_encoder: true } => "UNet + text encoder".to_string(),
        Trained::Full {
            text_encoder: false,
        } => "UNet".to_string(),
        Trained::Lora { rank, text_encoder } => format!(
            "LoRA rank {rank}{}",
            if text_encoder { " + text encoder" } else { "" }
        ),
        Trained::TextualInversion { vectors } => format!("Textual Inversion ({vectors} vectors)"),
        Trained::CustomDiffusion { .. } => "Custom Diffusion".to_string(),
    };
    format!(
        "{trained}, {} px, batch {}, {}, {}, {}",
        s.resolution,
        s.batch,
        s.precision.name(),
        match s.optimizer {
            OptimizerKind::AdamW => "AdamW",
            OptimizerKind::AdamW8bit => "8-bit AdamW",
        },
        if s.gradient_checkpointing {
            "gradient checkpointing"
        } else {
            "no gradient checkpointing"
        }
    )
}

/// The guard run before a training run loads anything: logs the estimate (with and
/// without gradient checkpointing) and refuses a run whose estimate exceeds the memory
/// available, unless `training.ignore_memory_check`. Skipped off the CPU (candle does not
/// report free device memory).
pub fn guard(cfg: &ResolvedConfig, device: &Device) -> Result<MemoryEstimate> {
    let settings = &MemorySettings::from_config(cfg, device);
    let models = ModelConfigs::read(&cfg.base)?;
    let est = estimate(&models, settings)?;
    let other = estimate(
        &models,
        &MemorySettings {
            gradient_checkpointing: !settings.gradient_checkpointing,
            ..*settings
        },
    )?;
    let (with, without) = if settings.gradient_checkpointing {
        (est.total, other.total)
    } else {
        (other.total, est.total)
    };
    tracing::info!(
        "estimated peak memory ({}):\n{est}\n  with gradient checkpointing {:.2} GB, without {:.2} GB",
        describe(settings),
        gb(with),
        gb(without)
    );
    if !device.is_cpu() {
        tracing::info!(
            "memory check skipped on {device:?}: candle does not report free device memory"
        );
        return Ok(est);
    }
    let Some(available) = available_memory() else {
        tracing::info!("memory check skipped: the available memory is unknown here");
        return Ok(est);
    };
    check(&models, settings, &est, available, cfg.ignore_memory_check)?;
    Ok(est)
}

/// Refuses `est` when it exceeds `available` (unless `ignore`), naming the settings that
/// would fit; warns when it comes within 10% of it.
pub fn check(
    models: &ModelConfigs,
    settings: &MemorySettings,
    est: &MemoryEstimate,
    available: u64,
    ignore: bool,
) -> Result<()> {
    if est.total <= available {
        // Measured peaks fell within about 10% of the estimate (BENCHMARKS.md).
        if est.total as f64 > 0.9 * available as f64 {
            tracing::warn!(
                "the estimated peak memory {:.2} GB is within 10% of the {:.2} GB available, about \
                 the estimate's accuracy: the run may still run out of memory",
                gb(est.total),
                gb(available)
            );
        }
        return Ok(());
    }
    if ignore {
        tracing::warn!(
            "the estimated peak memory {:.2} GB exceeds the {:.2} GB available; going on (training.ignore_memory_check)",
            gb(est.total),
            gb(available)
        );
        return Ok(());
    }
    let found = suggestions(models, settings, available)?;
    Err(Error::InsufficientMemory {
        estimate: est.total,
        available,
        suggestions: found
            .iter()
            .map(|s| format!("{} (estimated {:.2} GB)", s.setting, gb(s.estimate)))
            .collect(),
    })
}
