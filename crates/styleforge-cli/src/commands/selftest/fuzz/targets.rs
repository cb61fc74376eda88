//! The fuzz targets: each feeds mutated bytes to the library's own reader of one kind of
//! user file, starting from a small corpus of valid inputs built here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use image::{ImageEncoder, RgbImage};
use styleforge::adapters::custom_diffusion::CustomDiffusionFile;
use styleforge::adapters::lora::{kohya_name, merge_lora_files, LoraFile};
use styleforge::adapters::textual_inversion::{install_embeddings, EmbeddingFile};
use styleforge::adapters::{BaseWeights, Component};
use styleforge::data::preprocess::{CropMode, Preprocess};
use styleforge::models::candle::{DType, Device};
use styleforge::models::clip_text::ClipTextConfig;
use styleforge::models::config::parse_config;
use styleforge::models::folder::ModelFolder;
use styleforge::models::unet::UNetConfig;
use styleforge::models::vae::VaeConfig;
use styleforge::models::weights::{check_finite, WeightStore};
use styleforge::pipelines::GenerationParameters;
use styleforge::schedulers::SchedulerConfig;
use styleforge::tokenizer::ClipTokenizer;
use styleforge::training::TrainConfig;

/// The most bytes an image target may decode to: an input claiming more is refused by the
/// decoder's limit, so no target allocates more than a few times this.
const MAX_DECODED: u64 = 16 << 20;

/// The names of every target, in the order they run.
pub const NAMES: [&str; 9] = [
    "safetensors",
    "model-config",
    "train-config",
    "tokenizer",
    "image",
    "png-parameters",
    "adapters",
    "single-file",
    "prompt",
];

/// A target's call on one input: `Err` with the library's message when it refuses it.
pub type TargetFn = dyn FnMut(&[u8]) -> std::result::Result<(), String>;

/// One fuzz target: its corpus, the tokens its mutator inserts, the largest input it is
/// given, and the library call it makes on an input (an error is an expected outcome; a
/// panic is a defect).
pub struct Target {
    /// The target's name (one of [`NAMES`]).
    pub name: &'static str,
    /// Valid inputs to start from.
    pub corpus: Vec<Vec<u8>>,
    /// Tokens the mutator inserts.
    pub dictionary: Vec<Vec<u8>>,
    /// Inputs are cut to this many bytes.
    pub max_len: usize,
    /// Repairs what a mutation broke that the format checks first (a PNG's chunk CRCs),
    /// applied to half of the mutated inputs so that mutations reach past the check.
    pub fixup: Option<fn(&mut [u8])>,
    /// Runs the library on one input.
    pub run: Box<TargetFn>,
}

/// What the targets share: a scratch folder (inputs that the library reads from files are
/// written there), the embedded toy model unpacked, its weights and tokenizer.
pub struct Context {
    dir: PathBuf,
    toy: Option<PathBuf>,
    base: Option<std::rc::Rc<BaseWeights>>,
}

impl Context {
    /// A context in the scratch folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            toy: None,
            base: None,
        }
    }

    fn toy(&mut self) -> Result<PathBuf> {
        if self.toy.is_none() {
            self.toy = Some(
                styleforge::toy::embedded::unpack_base_model(&self.dir)
                    .context("unpacking the embedded toy model")?,
            );
        }
        Ok(self.toy.clone().expect("unpacked"))
    }

    fn base(&mut self) -> Result<std::rc::Rc<BaseWeights>> {
        if self.base.is_none() {
            let toy = self.toy()?;
            self.base = Some(std::rc::Rc::new(BaseWeights::load(
                &toy,
                DType::F32,
                &Device::Cpu,
            )?));
        }
        Ok(self.base.clone().expect("loaded"))
    }

    /// Builds target `name`.
    pub fn target(&mut self, name: &str) -> Result<Target> {
        Ok(match name {
            "safetensors" => self.safetensors(),
            "model-config" => self.model_config()?,
            "train-config" => train_config(),
            "tokenizer" => tokenizer()?,
            "image" => self.image()?,
            "png-parameters" => self.png_parameters()?,
            "adapters" => self.adapters()?,
            "single-file" => self.single_file()?,
            "prompt" => prompt(),
            other => anyhow::bail!(
                "no fuzz target `{other}`; the targets are {}",
                NAMES.join(", ")
            ),
        })
    }

    fn safetensors(&mut self) -> Target {
        let path = self.dir.join("fuzz-weights.safetensors");
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let corpus = vec![
            safetensors_bytes(
                &[
                    (
                        "conv.weight",
                        "F32",
                        &[2, 3],
                        f32s(&[1., 2., 3., 4., 5., 6.]),
                    ),
                    ("conv.bias", "F16", &[2], vec![0, 0x3c, 0, 0xc0]),
                    ("norm", "BF16", &[1], vec![0x80, 0x3f]),
                ],
                Some(&[("format", "pt")]),
            ),
            safetensors_bytes(
                &[
                    (
                        "ids",
                        "I64",
                        &[2],
                        vec![1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
                    ),
                    ("mask", "BOOL", &[2], vec![1, 0]),
                    ("scalar", "F64", &[], 1.5f64.to_le_bytes().to_vec()),
                    ("empty", "F32", &[0, 4], Vec::new()),
                    ("bytes", "U8", &[3], vec![1, 2, 3]),
                ],
                None,
            ),
            safetensors_bytes(
                &[("nan", "F32", &[2], f32s(&[f32::NAN, f32::INFINITY]))],
                None,
            ),
        ];
        let dictionary = tokens(&[
            "\"dtype\"",
            "\"shape\"",
            "\"data_offsets\"",
            "\"__metadata__\"",
            "\"F32\"",
            "\"F16\"",
            "\"BF16\"",
            "\"I64\"",
            "\"F8_E4M3\"",
            "[]",
            "[0,0]",
            "{",
            "}",
            ",",
            ":",
            "null",
        ]);
        Target {
            name: "safetensors",
            corpus,
            dictionary,
            max_len: 64 << 10,
            fixup: None,
            run: Box::new(move |input| {
                std::fs::write(&path, input).map_err(|e| e.to_string())?;
                let store = WeightStore::frozen(&[&path]).map_err(|e| e.to_string())?;
                let mut names: Vec<String> = store.names().map(String::from).collect();
                names.sort();
                let mut first_error = None;
                for name in &names {
                    if let Err(e) = store.load(name, DType::F32, &Device::Cpu) {
                        first_error.get_or_insert(e.to_string());
                    }
                }
                drop(store);
                check_finite(&[&path]).map_err(|e| e.to_string())?;
                first_error.map_or(Ok(()), Err)
            }),
        }
    }

    fn model_config(&mut self) -> Result<Target> {
        let toy = self.toy()?;
        let mut corpus = Vec::new();
        for file in [
            "unet/config.json",
            "vae/config.json",
            "text_encoder/config.json",
            "scheduler/scheduler_config.json",
        ] {
            corpus.push(std::fs::read(toy.join(file)).with_context(|| file.to_string())?);
        }
        let dictionary = tokens(&[
            "\"block_out_channels\"",
            "\"layers_per_block\"",
            "\"attention_head_dim\"",
            "\"cross_attention_dim\"",
            "\"num_attention_heads\"",
            "\"down_block_types\"",
            "\"up_block_types\"",
            "\"norm_num_groups\"",
            "\"hidden_size\"",
            "\"num_hidden_layers\"",
            "\"beta_schedule\"",
            "\"num_train_timesteps\"",
            "\"trained_betas\"",
            "\"timestep_spacing\"",
            "\"prediction_type\"",
            "\"CrossAttnDownBlock2D\"",
            "[",
            "]",
            "{",
            "}",
            "null",
            "true",
            "-1",
            "[]",
            "1e400",
        ]);
        let path = Path::new("fuzz/config.json");
        Ok(Target {
            name: "model-config",
            corpus,
            dictionary,
            max_len: 16 << 10,
            fixup: None,
            run: Box::new(move |input| {
                let text = String::from_utf8_lossy(input);
                let results = [
                    parse_config::<UNetConfig>(&text, path).map(drop),
                    parse_config::<VaeConfig>(&text, path).map(drop),
                    parse_config::<ClipTextConfig>(&text, path).map(drop),
                ];
                let scheduler = SchedulerConfig::from_json_str(&text).map(drop);
                let mut errors: Vec<String> = results
                    .iter()
                    .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                    .collect();
                if let Err(e) = scheduler {
                    errors.push(e.to_string());
                }
                if errors.len() == 4 {
                    Err(errors.join(" | "))
                } else {
                    Ok(())
                }
            }),
        })
    }

    fn image(&mut self) -> Result<Target> {
        let corpus = image_corpus(&self.dir)?;
        let dictionary = tokens(&[
            "IHDR", "IDAT", "PLTE", "tRNS", "eXIf", "IEND", "VP8L", "RIFF",
        ]);
        Ok(Target {
            name: "image",
            corpus,
            dictionary,
            max_len: 64 << 10,
            fixup: Some(fix_png_crcs),
            run: Box::new(move |input| {
                let path = Path::new("fuzz.png");
                let img = styleforge::image_io::decode_rgb_within(path, input, MAX_DECODED)
                    .map_err(|e| e.to_string())?;
                // The training preprocessing, at a small square and as a bucket.
                let mut prep = Preprocess::new(16);
                prep.allow_upscale = true;
                prep.check_size(path, img.width(), img.height())
                    .map_err(|e| e.to_string())?;
                let square = prep.apply(&img, 3, true);
                prep.crop = CropMode::Random;
                let bucket = prep.apply_to(&img, 1, false, (24, 8));
                styleforge::image_io::rgb_to_tensor(&square, &Device::Cpu)
                    .map_err(|e| e.to_string())?;
                styleforge::image_io::rgb_to_tensor(&bucket, &Device::Cpu)
                    .map_err(|e| e.to_string())?;
                Ok(())
            }),
        })
    }

    fn png_parameters(&mut self) -> Result<Target> {
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 9]));
        let mut corpus = Vec::new();
        for (i, params) in [
            "a cat, zwx style\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 1",
            "東京, café\nSteps: 2, Seed: 3",
        ]
        .iter()
        .enumerate()
        {
            let p = self.dir.join(format!("params-{i}.png"));
            styleforge::image_io::save_png_with_parameters(&img, params, &p)?;
            corpus.push(std::fs::read(&p)?);
        }
        // A compressed (zTXt) chunk, as ComfyUI and some A1111 versions write it.
        let mut z = b"parameters\0\0".to_vec();
        z.extend(stored_zlib(b"a dog\nSteps: 9, Seed: 4"));
        corpus.push(png_with_chunks(&[(*b"zTXt", z)]));
        let dictionary = tokens(&["tEXt", "iTXt", "zTXt", "parameters\0", "IEND", "IDAT"]);
        Ok(Target {
            name: "png-parameters",
            corpus,
            dictionary,
            max_len: 16 << 10,
            fixup: Some(fix_png_crcs),
            run: Box::new(|input| {
                let text = styleforge::image_io::png_parameters_of(Path::new("fuzz.png"), input)
                    .map_err(|e| e.to_string())?;
                if let Some(text) = text {
                    GenerationParameters::prompts_from_a1111_text(&text);
                }
                Ok(())
            }),
        })
    }

    fn adapters(&mut self) -> Result<Target> {
        let base = self.base()?;
        let toy = self.toy()?;
        let tokenizer = ModelFolder::open(&toy)?.tokenizer()?;
        let corpus = adapter_corpus(&base)?;
        let path = self.dir.join("fuzz-adapter.safetensors");
        let mut scratch = tokenizer.clone();
        let dictionary = tokens(&[
            "lora_unet_",
            "lora_te_",
            ".lora_down.weight",
            ".lora_up.weight",
            ".alpha",
            ".lora_A.weight",
            ".lora_B.weight",
            "unet.",
            "text_encoder.",
            "token.",
            "emb_params",
            "string_to_param.*",
            "\"shape\"",
            "\"F32\"",
            ".processor.to_k_custom_diffusion.weight",
        ]);
        Ok(Target {
            name: "adapters",
            corpus,
            dictionary,
            max_len: 64 << 10,
            fixup: None,
            run: Box::new(move |input| {
                std::fs::write(&path, input).map_err(|e| e.to_string())?;
                let mut errors = Vec::new();
                match LoraFile::load(&path) {
                    Ok(file) => {
                        if let Err(e) = merge_lora_files(&base, &[(file, 0.5)]) {
                            errors.push(e.to_string());
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                match EmbeddingFile::load(&path, None) {
                    Ok(emb) => {
                        if let Err(e) = install_embeddings(&base, &mut scratch, &[emb]) {
                            errors.push(e.to_string());
                        }
                        // Tokens were added: back to the model's own (a clone per
                        // iteration would be most of the target's time).
                        if scratch.vocab_size() != tokenizer.vocab_size() {
                            scratch = tokenizer.clone();
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                match CustomDiffusionFile::load(&path) {
                    Ok(cd) => {
                        if let Err(e) = cd.unet_overrides(&base) {
                            errors.push(e.to_string());
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                if errors.len() == 3 {
                    Err(errors.join(" | "))
                } else {
                    Ok(())
                }
            }),
        })
    }

    fn single_file(&mut self) -> Result<Target> {
        let toy = self.toy()?;
        let (tensors, _) = styleforge::models::single_file::folder_to_ldm_tensors(&toy)?;
        let mut lines: Vec<String> = tensors
            .iter()
            .map(|(k, t)| {
                let dims: Vec<String> = t.dims().iter().map(usize::to_string).collect();
                format!("{k}\t{}\n", dims.join(","))
            })
            .collect();
        lines.sort();
        let whole = lines.concat().into_bytes();
        // Also each component on its own (a partial checkpoint).
        let part = |prefix: &str| -> Vec<u8> {
            lines
                .iter()
                .filter(|l| l.starts_with(prefix))
                .cloned()
                .collect::<String>()
                .into_bytes()
        };
        let corpus = vec![
            whole,
            part("model.diffusion_model."),
            part("first_stage_model."),
        ];
        let dictionary = tokens(&[
            "model.diffusion_model.input_blocks.",
            "model.diffusion_model.output_blocks.",
            "model.diffusion_model.middle_block.",
            "first_stage_model.encoder.down.",
            "first_stage_model.decoder.up.",
            "cond_stage_model.transformer.text_model.encoder.layers.",
            ".0.op.weight",
            ".1.proj_in.weight",
            "\t",
            "\n",
            ",",
        ]);
        Ok(Target {
            name: "single-file",
            corpus,
            dictionary,
            max_len: 256 << 10,
            fixup: None,
            run: Box::new(|input| {
                let shapes = parse_shapes(input);
                styleforge::models::single_file::infer_configs(
                    Path::new("fuzz.safetensors"),
                    &shapes,
                )
                .map(drop)
                .map_err(|e| e.to_string())
            }),
        })
    }
}

fn tokens(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn train_config() -> Target {
    let corpus = tokens(&[
        "method = \"styleforge\"\n[model]\nbase = \"m\"\n[[data.concepts]]\nstyle_dir = \"s\"\n",
        "method = \"lora\"\nseed = 7\n[model]\nbase = \"runwayml/sd@main\"\nvariant = \"fp16\"\n\
         [[data.concepts]]\nstyle_dir = \"s\"\ntoken = \"sks\"\n[data]\nresolution = 64\n\
         bucketing = true\nbucket_step = 64\nmax_aspect = 2.0\ncaption_dropout = 0.1\n\
         [training]\nprecision = \"fp16\"\nsnr_gamma = 5.0\ntimestep_sampling = \"logit-normal\"\n\
         ema_decay = 0.999\n[optim]\nsteps = 10\nlr = 1e-4\nlr_schedule = \"cosine\"\n\
         warmup_steps = 2\n[output]\ndir = \"runs/x\"\ncheckpoint_every = 5\n\
         validation_prompts = [\"a {token} house\"]\n",
        "method = \"multi-styleforge\"\n[model]\nbase = \"m.safetensors\"\nconfig = \"c\"\n\
         [[data.concepts]]\nstyle_dir = \"p\"\n[[data.concepts]]\nstyle_dir = \"b\"\n\
         aux_dir = \"a\"\n[training]\nnum_aux_images = 4\naux_steps = 2\n\
         gradient_checkpointing = true\nmin_timestep = 10\nmax_timestep = 900\n\
         [optim]\ngradient_accumulation = 2\nmax_grad_norm = 0.5\noptimizer = \"adamw8bit\"\n",
        "method = \"textual-inversion\"\n[model]\nbase = \"m\"\n[[data.concepts]]\n\
         style_dir = \"s\"\n[training]\nnum_vectors = 3\ninitializer_tokens = [\"art\"]\n",
    ]);
    let dictionary = tokens(&[
        "[model]",
        "[data]",
        "[training]",
        "[optim]",
        "[output]",
        "[[data.concepts]]",
        " = ",
        "\"",
        "\n",
        "[",
        "]",
        "{",
        "}",
        "true",
        "-1",
        "0",
        "inf",
        "nan",
        "1e400",
        "steps",
        "lr",
        "resolution",
        "snr_gamma",
        "ema_decay",
        "method",
    ]);
    Target {
        name: "train-config",
        corpus,
        dictionary,
        max_len: 8 << 10,
        fixup: None,
        run: Box::new(|input| {
            let text = String::from_utf8_lossy(input);
            let cfg =
                TrainConfig::from_toml(&text, Path::new("fuzz.toml")).map_err(|e| e.to_string())?;
            let resolved = cfg.resolve().map_err(|e| e.to_string())?;
            resolved.to_toml().map_err(|e| e.to_string())?;
            let _ = resolved.lr_plan();
            Ok(())
        }),
    }
}

fn prompt_corpus() -> Vec<Vec<u8>> {
    tokens(&[
        "a photo of zwx style",
        "a (red:1.2) house, [blue] sky, masterpiece, 4k",
        "🎨🏠🌅 👩‍👩‍👧",
        "東京の夜, café naïve Ωmega",
        "word word word word word word word word word word word word word word word word \
         word word word word word word word word word word word word word word word word \
         word word word word word word word word word word word word word word word word \
         word word word word word word word word word word",
        "<|startoftext|>a cat<|endoftext|>",
        "don't stop 'til you're done; it's 3.5 o'clock",
        "\tline\nbreak\r\n",
    ])
}

fn tokenizer() -> Result<Target> {
    let tok = ClipTokenizer::standard()?;
    let n = tok.vocab_size() as u32;
    Ok(Target {
        name: "tokenizer",
        corpus: prompt_corpus(),
        dictionary: tokens(&["<|endoftext|>", "</w>", "'s", "(", ":1.5)", " ", "é", "🎨"]),
        max_len: 4 << 10,
        fixup: None,
        run: Box::new(move |input| {
            let text = String::from_utf8_lossy(input);
            let enc = tok.encode_padded(&text);
            tok.tokenize(&text);
            tok.decode(&enc.ids, true);
            // The bytes as token ids, some past the vocabulary.
            let ids: Vec<u32> = input
                .chunks(2)
                .map(|c| {
                    u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)]) as u32 % (n + 64)
                })
                .collect();
            tok.decode(&ids, false);
            tok.decode(&ids, true);
            for id in ids.iter().take(16) {
                tok.token_bytes(*id);
            }
            Ok(())
        }),
    })
}

fn prompt() -> Target {
    Target {
        name: "prompt",
        corpus: prompt_corpus(),
        dictionary: tokens(&["\u{7}", "\u{1b}[31m", "\u{0}", "\u{85}", "\t", "\n", "🎨"]),
        max_len: 4 << 10,
        fixup: None,
        run: Box::new(|input| {
            let text = String::from_utf8_lossy(input);
            styleforge::pipelines::check_prompt("the prompt", &text).map_err(|e| e.to_string())?;
            // The A1111 `parameters` text read back: the prompts and negative prompt.
            GenerationParameters::prompts_from_a1111_text(&text);
            Ok(())
        }),
    }
}

/// `name\td0,d1,…` lines to a shape map; lines that do not parse are skipped.
fn parse_shapes(input: &[u8]) -> HashMap<String, Vec<usize>> {
    let text = String::from_utf8_lossy(input);
    text.lines()
        .take(8192)
        .filter_map(|line| {
            let (name, dims) = line.split_once('\t')?;
            let dims: Option<Vec<usize>> = if dims.is_empty() {
                Some(Vec::new())
            } else {
                dims.split(',').map(|d| d.trim().parse().ok()).collect()
            };
            Some((name.to_string(), dims?))
        })
        .collect()
}

/// A safetensors file: `(name, dtype, shape, data)` tensors and optional metadata.
fn safetensors_bytes(
    tensors: &[(&str, &str, &[usize], Vec<u8>)],
    metadata: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    if let Some(m) = metadata {
        let m: serde_json::Map<String, serde_json::Value> = m
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// f32 values as little-endian bytes, a slow ramp.
fn ramp(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((i % 7) as f32 * 0.01 - 0.03).to_le_bytes())
        .collect()
}

/// LoRA (kohya and PEFT), embedding (A1111 and diffusers) and Custom Diffusion files for
/// the toy model.
fn adapter_corpus(base: &BaseWeights) -> Result<Vec<Vec<u8>>> {
    let mut unet_names: Vec<&String> = base
        .tensors(Component::Unet)
        .keys()
        .filter(|k| k.ends_with("attn2.to_k.weight"))
        .collect();
    unet_names.sort();
    let name = unet_names
        .first()
        .context("the toy UNet has no cross-attention")?
        .to_string();
    let w = &base.tensors(Component::Unet)[&name];
    let (out, inp) = w.dims2()?;
    let module = name.strip_suffix(".weight").expect("a weight");
    let kohya = kohya_name(Component::Unet, module);
    let r = 2;
    let te_width = base.text_encoder_config().hidden_size;
    let f = |n: &str| n.to_string();
    let lora_kohya = safetensors_bytes(
        &[
            (
                &f(&format!("{kohya}.lora_down.weight")),
                "F32",
                &[r, inp],
                ramp(r * inp),
            ),
            (
                &f(&format!("{kohya}.lora_up.weight")),
                "F32",
                &[out, r],
                ramp(out * r),
            ),
            (&f(&format!("{kohya}.alpha")), "F32", &[], ramp(1)),
        ],
        None,
    );
    let lora_peft = safetensors_bytes(
        &[
            (
                &f(&format!("unet.{module}.lora_A.weight")),
                "F32",
                &[r, inp],
                ramp(r * inp),
            ),
            (
                &f(&format!("unet.{module}.lora_B.weight")),
                "F32",
                &[out, r],
                ramp(out * r),
            ),
        ],
        None,
    );
    let a1111 = safetensors_bytes(
        &[("emb_params", "F32", &[2, te_width], ramp(2 * te_width))],
        None,
    );
    let diffusers_emb = safetensors_bytes(&[("<zwx>", "F32", &[te_width], ramp(te_width))], None);
    let custom = safetensors_bytes(
        &[
            (
                &f(&format!("unet.{name}")),
                "F32",
                &[out, inp],
                ramp(out * inp),
            ),
            ("token.<new1>", "F32", &[te_width], ramp(te_width)),
        ],
        None,
    );
    Ok(vec![lora_kohya, lora_peft, a1111, diffusers_emb, custom])
}

/// Rewrites the CRC of every whole chunk of a PNG (a no-op on other formats).
pub fn fix_png_crcs(data: &mut [u8]) {
    if !data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return;
    }
    let mut at = 8;
    while at + 12 <= data.len() {
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|e| e + 4 <= data.len()) else {
            break;
        };
        let crc = crc32(&data[at + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// CRC-32 (ISO-HDLC, PNG's chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `raw` in one stored (uncompressed) zlib block.
fn stored_zlib(raw: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    z
}

fn push_chunk(out: &mut Vec<u8>, kind: [u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(&kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A 2×2 PNG written by hand with the given IHDR colour type and depth, palette and extra
/// chunks before the pixels.
fn png_by_hand(
    depth: u8,
    colour: u8,
    plte: Option<&[u8]>,
    extra: &[([u8; 4], Vec<u8>)],
) -> Vec<u8> {
    let channels: usize = match colour {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        _ => 4,
    };
    let row = 1 + (2 * channels * depth as usize).div_ceil(8);
    let raw: Vec<u8> = (0..2 * row)
        .map(|i| if i % row == 0 { 0 } else { (i * 37 % 2) as u8 })
        .collect();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&2u32.to_be_bytes());
    ihdr.extend_from_slice(&2u32.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    push_chunk(&mut out, *b"IHDR", &ihdr);
    if let Some(p) = plte {
        push_chunk(&mut out, *b"PLTE", p);
    }
    for (kind, data) in extra {
        push_chunk(&mut out, *kind, data);
    }
    push_chunk(&mut out, *b"IDAT", &stored_zlib(&raw));
    push_chunk(&mut out, *b"IEND", &[]);
    out
}

fn png_with_chunks(extra: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    png_by_hand(8, 2, None, extra)
}

/// PNGs of every colour type and depth the decoder handles, JPEGs with and without an
/// EXIF orientation, and a lossless WebP.
fn image_corpus(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut corpus = vec![
        png_by_hand(8, 2, None, &[]),
        png_by_hand(16, 2, None, &[]),
        png_by_hand(8, 6, None, &[]),
        png_by_hand(16, 0, None, &[]),
        png_by_hand(8, 4, None, &[]),
        png_by_hand(1, 0, None, &[]),
        png_by_hand(
            8,
            3,
            Some(&[255, 0, 0, 0, 0, 255]),
            &[(*b"tRNS", vec![0, 255])],
        ),
        png_by_hand(8, 2, None, &[(*b"eXIf", exif_orientation(6))]),
    ];
    let img = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 16, y as u8 * 30, 90]));
    for exif in [None, Some(8u16)] {
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        if let Some(o) = exif {
            enc.set_exif_metadata(exif_orientation(o))?;
        }
        enc.write_image(img.as_raw(), 16, 8, image::ExtendedColorType::Rgb8)?;
        corpus.push(out);
    }
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp).write_image(
        img.as_raw(),
        16,
        8,
        image::ExtendedColorType::Rgb8,
    )?;
    corpus.push(webp);
    let _ = dir;
    Ok(corpus)
}

/// A big-endian EXIF (TIFF) block with one tag: Orientation = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut e = b"MM\0\x2a\0\0\0\x08".to_vec();
    e.extend_from_slice(&1u16.to_be_bytes());
    e.extend_from_slice(&0x0112u16.to_be_bytes());
    e.extend_from_slice(&3u16.to_be_bytes());
    e.extend_from_slice(&1u32.to_be_bytes());
    e.extend_from_slice(&value.to_be_bytes());
    e.extend_from_slice(&[0, 0]);
    e.extend_from_slice(&0u32.to_be_bytes());
    e
}
