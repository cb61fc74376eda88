//! Generation parameters in the text form AUTOMATIC1111 writes into PNGs (and ComfyUI and
//! most image tools read), so an image can be traced back to how it was made.

use super::SchedulerChoice;

/// What made an image, for its `parameters` PNG text chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParameters {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt, if any.
    pub negative_prompt: Option<String>,
    /// Denoising steps of the schedule.
    pub steps: usize,
    /// The sampler as chosen (`None`: the model's own, named by `default_sampler`).
    pub scheduler: SchedulerChoice,
    /// The model's own scheduler class, used when `scheduler.name` is `None`.
    pub default_sampler: String,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// Guidance rescale φ (written only when on).
    pub guidance_rescale: f64,
    /// Seed of the random stream (`None` when the latents were given).
    pub seed: Option<u64>,
    /// Width × height in pixels.
    pub size: (usize, usize),
    /// The model's name.
    pub model: String,
    /// img2img strength, if this was an img2img generation.
    pub denoising_strength: Option<f64>,
    /// Index of the image in a batch (A1111 adds it for batches).
    pub batch_index: Option<usize>,
}

/// AUTOMATIC1111's sampler name for one of ours (`"dpm++2m"` + Karras → `"DPM++ 2M Karras"`).
pub fn a1111_sampler_name(name: &str, karras: bool) -> String {
    let key = name.to_ascii_lowercase().replace(['-', ' '], "_");
    let key = key.strip_suffix("_karras").unwrap_or(&key).to_string();
    let karras = karras || name.to_ascii_lowercase().ends_with("karras");
    let base = match key.as_str() {
        "ddim" | "ddimscheduler" => "DDIM",
        "pndm" | "plms" | "pndmscheduler" => "PLMS",
        "ddpm" | "ddpmscheduler" => "DDPM",
        "euler" | "eulerdiscretescheduler" => "Euler",
        "euler_a" | "euler_ancestral" | "eulerancestraldiscretescheduler" => "Euler a",
        "dpm++2m" | "dpmpp_2m" | "dpm++_2m" | "dpmsolvermultistepscheduler" => "DPM++ 2M",
        "dpm++2m_sde" | "dpmpp_2m_sde" | "dpm++_2m_sde" => "DPM++ 2M SDE",
        _ => return name.to_string(),
    };
    if karras {
        format!("{base} Karras")
    } else {
        base.to_string()
    }
}

impl GenerationParameters {
    /// The A1111 text: prompt line, `Negative prompt:` line, then `Key: value` pairs.
    pub fn to_a1111_text(&self) -> String {
        let mut text = self.prompt.clone();
        if let Some(neg) = self.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
            text.push_str("\nNegative prompt: ");
            text.push_str(neg);
        }
        let sampler = match &self.scheduler.name {
            Some(name) => a1111_sampler_name(name, self.scheduler.karras),
            None => a1111_sampler_name(&self.default_sampler, false),
        };
        let mut fields = vec![
            format!("Steps: {}", self.steps),
            format!("Sampler: {sampler}"),
            format!("CFG scale: {}", self.guidance_scale),
        ];
        if self.guidance_rescale > 0.0 {
            // The key the A1111 CFG-rescale extension writes.
            fields.push(format!("CFG Rescale phi: {}", self.guidance_rescale));
        }
        if let Some(seed) = self.seed {
            fields.push(format!("Seed: {seed}"));
        }
        fields.push(format!("Size: {}x{}", self.size.0, self.size.1));
        fields.push(format!("Model: {}", self.model));
        if let Some(s) = self.denoising_strength {
            fields.push(format!("Denoising strength: {s}"));
        }
        if let Some(i) = self.batch_index {
            fields.push(format!("Batch pos: {i}"));
        }
        fields.push(format!("Version: StyleForge {}", env!("CARGO_PKG_VERSION")));
        text.push('\n');
        text.push_str(&fields.join(", "));
        text
    }

    /// Parses the prompt (and negative prompt) back out of an A1111 `parameters` text.
    pub fn prompts_from_a1111_text(text: &str) -> (String, Option<String>) {
        let mut prompt_lines = Vec::new();
        let mut negative = None;
        for line in text.lines() {
            if let Some(neg) = line.strip_prefix("Negative prompt:") {
                negative = Some(neg.trim().to_string());
            } else if line.starts_with("Steps: ") {
                break;
            } else if negative.is_none() {
                prompt_lines.push(line);
            }
        }
        (prompt_lines.join("\n"), negative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_text_round_trips_prompts() {
        let p = GenerationParameters {
            prompt: "a zwx style portrait, oil".into(),
            negative_prompt: Some("blurry, lowres".into()),
            steps: 30,
            scheduler: SchedulerChoice {
                name: Some("dpm++2m".into()),
                karras: true,
            },
            default_sampler: "PNDMScheduler".into(),
            guidance_scale: 7.5,
            guidance_rescale: 0.0,
            seed: Some(42),
            size: (512, 512),
            model: "sd15".into(),
            denoising_strength: None,
            batch_index: None,
        };
        let text = p.to_a1111_text();
        assert!(text.starts_with("a zwx style portrait, oil\nNegative prompt: blurry, lowres\n"));
        assert!(text.contains("Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15"));
        let (prompt, neg) = GenerationParameters::prompts_from_a1111_text(&text);
        assert_eq!(prompt, p.prompt);
        assert_eq!(neg.as_deref(), Some("blurry, lowres"));
        assert!(!text.contains("Rescale"), "{text}");
        let rescaled = GenerationParameters {
            guidance_rescale: 0.7,
            ..p
        };
        let text = rescaled.to_a1111_text();
        assert!(
            text.contains("CFG scale: 7.5, CFG Rescale phi: 0.7, Seed: 42"),
            "{text}"
        );
    }

    #[test]
    fn sampler_names_follow_a1111() {
        assert_eq!(a1111_sampler_name("euler_a", false), "Euler a");
        assert_eq!(a1111_sampler_name("PNDMScheduler", false), "PLMS");
        assert_eq!(a1111_sampler_name("ddim", false), "DDIM");
        assert_eq!(
            a1111_sampler_name("dpm++2m_karras", false),
            "DPM++ 2M Karras"
        );
    }
}
