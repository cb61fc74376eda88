//! The command line's closed choices as clap value enums: `--help` lists every value and a
//! typo is refused with the possible ones. Each maps onto the library's own type or name
//! (the library does not depend on clap).

use clap::ValueEnum;
use styleforge::training::config::{Method, SaveFormat};
use styleforge::world::Style;

/// A training method (`train --method`, `protocol --toy --methods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// StyleForge: UNet + text encoder, StyleRef images ↔ "[V] style", Aux ↔ "style".
    Styleforge,
    /// Multi-StyleForge: people and backgrounds bound to two tokens.
    MultiStyleforge,
    /// DreamBooth baseline: the UNet, with "style" class images.
    Dreambooth,
    /// LoRA baseline: low-rank adapters on the attention projections.
    Lora,
    /// Textual Inversion baseline: new token embeddings only.
    TextualInversion,
    /// Custom Diffusion baseline: cross-attention K/V and modifier tokens.
    CustomDiffusion,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Styleforge => Method::Styleforge,
            MethodArg::MultiStyleforge => Method::MultiStyleforge,
            MethodArg::Dreambooth => Method::Dreambooth,
            MethodArg::Lora => Method::Lora,
            MethodArg::TextualInversion => Method::TextualInversion,
            MethodArg::CustomDiffusion => Method::CustomDiffusion,
        }
    }
}

/// What `train` writes as the fine-tuned model (`--save-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormatArg {
    /// A diffusers folder, `<run>/model/`.
    Diffusers,
    /// One single-file checkpoint (LDM layout), `<run>/model.safetensors`.
    SingleFile,
    /// Both.
    Both,
}

impl From<SaveFormatArg> for SaveFormat {
    fn from(f: SaveFormatArg) -> Self {
        match f {
            SaveFormatArg::Diffusers => SaveFormat::Diffusers,
            SaveFormatArg::SingleFile => SaveFormat::SingleFile,
            SaveFormatArg::Both => SaveFormat::Both,
        }
    }
}

/// A sampler (`generate`/`stylize --scheduler`). Other spellings the library knows
/// (`plms`, `dpmpp_2m`, `euler_ancestral`, diffusers class names, a `_karras` suffix) are
/// accepted as aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerArg {
    /// DDIM (deterministic with eta 0).
    #[value(name = "ddim", alias = "ddimscheduler")]
    Ddim,
    /// PNDM / PLMS.
    #[value(name = "pndm", aliases = ["plms", "pndmscheduler"])]
    Pndm,
    /// Euler (Karras sigmas with `--karras`).
    #[value(name = "euler", alias = "eulerdiscretescheduler")]
    Euler,
    /// Euler ancestral (stochastic).
    #[value(
        name = "euler_a",
        aliases = ["euler-a", "eulera", "euler_ancestral", "euler-ancestral", "eulerancestraldiscretescheduler"]
    )]
    EulerA,
    /// DPM-Solver++ 2M (Karras sigmas with `--karras`).
    #[value(
        name = "dpm++2m",
        aliases = ["dpmpp_2m", "dpmpp2m", "dpmpp-2m", "dpm++_2m", "dpmsolvermultistepscheduler"]
    )]
    DpmPp2m,
    /// DPM-Solver++ 2M SDE (stochastic).
    #[value(
        name = "dpm++2m_sde",
        aliases = ["dpmpp_2m_sde", "dpmpp2m_sde", "dpmpp-2m-sde", "dpm++2m-sde", "dpm++_2m_sde"]
    )]
    DpmPp2mSde,
    /// DDPM (ancestral, the training schedule).
    #[value(name = "ddpm", alias = "ddpmscheduler")]
    Ddpm,
    /// Euler with Karras sigmas (`euler --karras`).
    #[value(name = "euler_karras", alias = "euler-karras", hide = true)]
    EulerKarras,
    /// DPM-Solver++ 2M with Karras sigmas (`dpm++2m --karras`).
    #[value(
        name = "dpm++2m_karras",
        aliases = ["dpmpp_2m_karras", "dpmpp2m_karras", "dpm++2m-karras", "dpmpp-2m-karras"],
        hide = true
    )]
    DpmPp2mKarras,
    /// DPM-Solver++ 2M SDE with Karras sigmas (`dpm++2m_sde --karras`).
    #[value(
        name = "dpm++2m_sde_karras",
        aliases = ["dpmpp_2m_sde_karras", "dpmpp2m_sde_karras", "dpm++2m-sde-karras", "dpmpp-2m-sde-karras"],
        hide = true
    )]
    DpmPp2mSdeKarras,
}

impl SchedulerArg {
    /// The name [`styleforge::schedulers::SchedulerKind::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Pndm => "pndm",
            Self::Euler => "euler",
            Self::EulerA => "euler_a",
            Self::DpmPp2m => "dpm++2m",
            Self::DpmPp2mSde => "dpm++2m_sde",
            Self::Ddpm => "ddpm",
            Self::EulerKarras => "euler_karras",
            Self::DpmPp2mKarras => "dpm++2m_karras",
            Self::DpmPp2mSdeKarras => "dpm++2m_sde_karras",
        }
    }
}

/// A prediction type for a single-file checkpoint (`convert --prediction-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PredictionTypeArg {
    /// The noise (SD 1.x, SD 2.x base).
    Epsilon,
    /// The velocity (SD 2.x 768 px).
    #[value(name = "v_prediction", alias = "v-prediction")]
    VPrediction,
    /// The clean sample.
    Sample,
}

impl PredictionTypeArg {
    /// The name diffusers' `scheduler_config.json` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Epsilon => "epsilon",
            Self::VPrediction => "v_prediction",
            Self::Sample => "sample",
        }
    }
}

/// A held-out toy-world style, one the toy base model has never seen (`demo --style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeldOutStyleArg {
    /// Flat colours with dark outlines.
    Cel,
    /// Faceted planes.
    Cubist,
    /// Dots of colour.
    Pointillist,
}

impl From<HeldOutStyleArg> for Style {
    fn from(s: HeldOutStyleArg) -> Self {
        match s {
            HeldOutStyleArg::Cel => Style::Cel,
            HeldOutStyleArg::Cubist => Style::Cubist,
            HeldOutStyleArg::Pointillist => Style::Pointillist,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use styleforge::schedulers::SchedulerKind;

    fn names<T: ValueEnum>() -> Vec<String> {
        T::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_string())
            .collect()
    }

    /// Every library method, by an exhaustive match: a new one fails to compile here.
    fn arg_of(m: Method) -> MethodArg {
        match m {
            Method::Styleforge => MethodArg::Styleforge,
            Method::MultiStyleforge => MethodArg::MultiStyleforge,
            Method::Dreambooth => MethodArg::Dreambooth,
            Method::Lora => MethodArg::Lora,
            Method::TextualInversion => MethodArg::TextualInversion,
            Method::CustomDiffusion => MethodArg::CustomDiffusion,
        }
    }

    #[test]
    fn every_method_has_its_library_name() {
        let args = MethodArg::value_variants();
        assert_eq!(args.len(), 6);
        for (arg, name) in args.iter().zip(names::<MethodArg>()) {
            let method = Method::from(*arg);
            assert_eq!(method.name(), name);
            assert_eq!(arg_of(method), *arg);
        }
    }

    #[test]
    fn save_formats_and_styles_keep_the_library_names() {
        let formats = SaveFormatArg::value_variants();
        assert_eq!(formats.len(), 3);
        for (f, name) in formats.iter().zip(names::<SaveFormatArg>()) {
            assert_eq!(SaveFormat::from(*f).name(), name);
        }
        let styles = HeldOutStyleArg::value_variants();
        assert_eq!(styles.len(), Style::HELD_OUT.len());
        for (s, name) in styles.iter().zip(names::<HeldOutStyleArg>()) {
            assert_eq!(Style::from(*s).name(), name);
            assert!(Style::HELD_OUT.contains(&Style::from(*s)));
        }
        let types = PredictionTypeArg::value_variants();
        assert_eq!(types.len(), 3);
        for (t, name) in types.iter().zip(names::<PredictionTypeArg>()) {
            assert_eq!(t.name(), name);
        }
    }

    #[test]
    fn every_scheduler_name_and_alias_is_one_the_library_reads() {
        let mut checked = 0;
        for arg in SchedulerArg::value_variants() {
            let value = arg.to_possible_value().unwrap();
            assert_eq!(value.get_name(), arg.name());
            let kind = SchedulerKind::from_name(arg.name(), false).unwrap();
            for alias in value.get_name_and_aliases() {
                let same = SchedulerKind::from_name(alias, false).unwrap();
                assert_eq!(same, kind, "{alias} is not {}", arg.name());
                checked += 1;
            }
        }
        assert!(checked > 30, "{checked} spellings");
    }
}

/// The dtype generation computes in (`generate` / `stylize --dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats (the default).
    F32,
    /// IEEE half precision (`.fp16` weights used as they are).
    F16,
    /// bfloat16.
    Bf16,
}

impl DtypeArg {
    /// The candle dtype.
    pub fn dtype(self) -> styleforge::models::candle::DType {
        use styleforge::models::candle::DType;
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}
