//! CLIP-T and CLIP-I on embeddings (pure functions; no model here).
//!
//! - CLIP-T is torchmetrics' `CLIPScore` (Hessel et al., *CLIPScore*, 2021, with
//!   `w = 100`): `100 · cos(image, text)` per pair. torchmetrics clamps the **mean** over
//!   pairs at 0, `max(mean(100 · cos), 0)`: [`clip_t_score`]. The per-pair form of the
//!   paper, `100 · max(cos, 0)`: [`clip_t_scores`].
//! - CLIP-I (DreamBooth's image-fidelity metric) is the mean cosine similarity between the
//!   embeddings of generated and reference images. We average over **every** generated ×
//!   reference pair (not only matched pairs), since generated images have no particular
//!   reference image: [`clip_i`].

use candle_core::{DType, Tensor, D};

use crate::error::{ModelError, Result};

/// Rows of `x` `[n, d]` divided by their L2 norms (as transformers does before the logits
/// and torchmetrics before the score). A zero row stays zero.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

fn rows(name: &str, x: &Tensor) -> Result<(usize, usize)> {
    x.dims2().map_err(|_| {
        ModelError::BadInput(format!(
            "{name} must be [n, dim] embeddings, got {:?}",
            x.dims()
        ))
    })
}

/// `cos(a_i, b_i)` for each row pair of `a`, `b` `[n, d]` → `n` values.
pub fn cosine_similarity(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    let (na, da) = rows("first embeddings", a)?;
    let (nb, db) = rows("second embeddings", b)?;
    if (na, da) != (nb, db) {
        return Err(ModelError::BadInput(format!(
            "paired embeddings differ in shape: [{na}, {da}] and [{nb}, {db}]"
        )));
    }
    let cos = (l2_normalize(a)? * l2_normalize(b)?)?.sum(D::Minus1)?;
    Ok(cos.to_vec1()?)
}

/// Per-pair CLIP-T: `100 · max(cos(image_i, text_i), 0)` for `image_embeds` and
/// `text_embeds` `[n, d]` (row `i` of each is one pair).
pub fn clip_t_scores(image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Vec<f32>> {
    Ok(cosine_similarity(image_embeds, text_embeds)?
        .into_iter()
        .map(|c| 100.0 * c.max(0.0))
        .collect())
}

/// CLIP-T over pairs as torchmetrics' `CLIPScore.compute()` returns it:
/// `max(mean_i(100 · cos(image_i, text_i)), 0)`.
pub fn clip_t_score(image_embeds: &Tensor, text_embeds: &Tensor) -> Result<f32> {
    let cos = cosine_similarity(image_embeds, text_embeds)?;
    let mean = cos.iter().map(|&c| 100.0 * c as f64).sum::<f64>() / cos.len() as f64;
    Ok(mean.max(0.0) as f32)
}

/// CLIP-I: the mean cosine similarity over every (generated, reference) pair of
/// `generated` `[n, d]` and `reference` `[m, d]` image embeddings.
pub fn clip_i(generated: &Tensor, reference: &Tensor) -> Result<f32> {
    let (n, d) = rows("generated image embeddings", generated)?;
    let (m, dr) = rows("reference image embeddings", reference)?;
    if d != dr || n == 0 || m == 0 {
        return Err(ModelError::BadInput(format!(
            "CLIP-I needs non-empty embeddings of one width, got [{n}, {d}] and [{m}, {dr}]"
        )));
    }
    let sims = l2_normalize(generated)?.matmul(&l2_normalize(reference)?.t()?)?;
    let total: f32 = sims
        .flatten_all()?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()? as f32;
    Ok(total / (n * m) as f32)
}
