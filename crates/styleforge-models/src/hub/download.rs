//! The Hub client (`hf-hub`, blocking `ureq`): only in builds with the `hub` feature.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::{env_flag, wanted_files, wanted_transformers_files, HubModel, HubOptions, RepoLayout};
use crate::error::{ModelError, Result};

fn hf_repo(model: &HubModel) -> Repo {
    Repo::with_revision(model.repo.clone(), RepoType::Model, model.revision.clone())
}

fn cache(opts: &HubOptions) -> Cache {
    match &opts.home {
        Some(home) => Cache::new(home.join("hub")),
        None => Cache::from_env(),
    }
}

fn snapshot_dir(cache: &Cache, model: &HubModel, commit: &str) -> PathBuf {
    cache
        .path()
        .join(hf_repo(model).folder_name())
        .join("snapshots")
        .join(commit)
}

fn http_error(model: &HubModel, endpoint: &str, e: ApiError) -> ModelError {
    if let ApiError::RequestError(inner) = &e {
        if let ureq::Error::Status(code, _) = inner.as_ref() {
            let hint = match code {
                401 | 403 => "; for a gated or private model set HF_TOKEN",
                404 => "; check the owner/name and revision",
                _ => "",
            };
            return ModelError::BadInput(format!(
                "model {model} not found on {endpoint} (HTTP {code}){hint}"
            ));
        }
    }
    ModelError::BadInput(format!("downloading {model} from {endpoint}: {e}"))
}

/// [`super::resolve`] with the client.
pub(super) fn resolve(model: &HubModel, opts: &HubOptions) -> Result<PathBuf> {
    let cache = cache(opts);
    let offline = opts.offline || env_flag("HF_HUB_OFFLINE");
    if offline {
        let found = match opts.layout {
            RepoLayout::Diffusers => cache
                .repo(hf_repo(model))
                .get("model_index.json")
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|dir| dir.join(opts.key_component()).is_dir()),
            RepoLayout::Transformers => cache
                .repo(hf_repo(model))
                .get("config.json")
                .and_then(|p| p.parent().map(Path::to_path_buf)),
        };
        return found.ok_or_else(|| {
            ModelError::BadInput(format!(
                "model {model} is not in the Hugging Face cache {} and offline mode \
                 (HF_HUB_OFFLINE) is on; download it once online",
                cache.path().display()
            ))
        });
    }
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok())
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.clone())
        .with_token(token)
        .with_progress(opts.progress)
        .build()
        .map_err(|e| http_error(model, &endpoint, e))?;
    let repo = api.repo(hf_repo(model));
    let info = repo.info().map_err(|e| http_error(model, &endpoint, e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let mut wanted = wanted_files(&files, opts.variant.as_deref());
    if opts.layout == RepoLayout::Transformers {
        wanted = wanted_transformers_files(&files);
        if !wanted.iter().any(|f| f == "config.json")
            || !wanted.iter().any(|f| f.ends_with(".safetensors"))
        {
            return Err(ModelError::BadInput(format!(
                "{model} is not a transformers model with .safetensors weights (no config.json \
                 or no .safetensors at its root; pickled weights are not downloaded)"
            )));
        }
    } else if let Some(only) = &opts.components {
        wanted.retain(|f| {
            f == "model_index.json" || only.iter().any(|c| f.starts_with(&format!("{c}/")))
        });
        let key = opts.key_component();
        if !wanted.iter().any(|f| f.starts_with(&format!("{key}/"))) {
            return Err(ModelError::BadInput(format!(
                "{model} has no {key}/ folder (a diffusers model repo was expected)"
            )));
        }
    } else if !wanted.iter().any(|f| f == "model_index.json")
        || !wanted.iter().any(|f| f.starts_with("unet/"))
    {
        return Err(ModelError::BadInput(format!(
            "{model} is not a diffusers Stable Diffusion model (no model_index.json and unet/)"
        )));
    }
    if opts.layout == RepoLayout::Diffusers
        && opts.key_component() == "unet"
        && !wanted
            .iter()
            .any(|f| f.starts_with("unet/") && f.ends_with(".safetensors"))
    {
        return Err(ModelError::BadInput(format!(
            "{model} has no .safetensors UNet weights (pickled weights are not downloaded)"
        )));
    }
    let snapshot = snapshot_dir(&cache, model, &info.sha);
    for file in &wanted {
        if snapshot.join(file).exists() {
            continue;
        }
        tracing::info!("downloading {file} of {model}");
        repo.download(file)
            .map_err(|e| http_error(model, &endpoint, e))?;
    }
    // The lock files hf-hub leaves beside the blobs.
    let blobs = cache
        .path()
        .join(hf_repo(model).folder_name())
        .join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "lock") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // The downloads wrote `refs/<revision>`; write it also when every file was cached.
    cache
        .repo(hf_repo(model))
        .create_ref(&info.sha)
        .map_err(|source| ModelError::Io {
            path: cache.path().join(hf_repo(model).folder_name()),
            source,
        })?;
    Ok(snapshot)
}
