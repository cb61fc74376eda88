//! Model arguments resolved to files on disk ([`styleforge_models::source`]): folders and
//! single files as they are, a single file converted once into a folder and reused, and
//! clear errors for missing paths and wrong kinds. Hub names: `tests/hub.rs`.

mod common;

use std::path::Path;

use common::fixture;
use styleforge_models::folder::ModelFolder;
use styleforge_models::hub::HubModel;
use styleforge_models::source::{resolve, LocalFormat, LocalModel, ModelSource, ResolveOptions};
use styleforge_models::ModelError;

#[test]
fn a_folder_resolves_to_itself() {
    let dir = fixture("tiny-sd1");
    let local = resolve(&dir, &ResolveOptions::default()).unwrap();
    assert_eq!(
        local,
        LocalModel {
            source: ModelSource::Folder(dir.clone()),
            path: dir.clone(),
            format: LocalFormat::Folder,
        }
    );
    assert!(!local.is_single_file() && !local.is_converted() && !local.is_hub());
    // A transformers folder too.
    let clip = fixture("clip-tiny");
    assert_eq!(
        resolve(&clip, &ResolveOptions::transformers())
            .unwrap()
            .path,
        clip
    );
}

#[test]
fn a_single_file_is_loaded_directly_unless_a_folder_is_asked_for() {
    let file = fixture("single_file/tiny-sd1.safetensors");
    let direct = resolve(&file, &ResolveOptions::diffusers(None)).unwrap();
    assert_eq!(direct.source, ModelSource::SingleFile(file.clone()));
    assert_eq!(direct.path, file);
    assert!(direct.is_single_file() && !direct.is_converted());

    let tmp = tempfile::tempdir().unwrap();
    let into = tmp.path().join("run/base-model");
    let opts = ResolveOptions {
        convert_into: Some(into.clone()),
        ..ResolveOptions::default()
    };
    let converted = resolve(&file, &opts).unwrap();
    assert_eq!(converted.path, into);
    assert_eq!(converted.format, LocalFormat::Folder);
    assert!(converted.is_converted() && !converted.is_single_file());
    ModelFolder::open(&into).unwrap();
    assert!(into.join("unet/config.json").is_file());

    // Converted once: a second resolve reuses the folder as it is.
    let marker = into.join("marker");
    std::fs::write(&marker, b"kept").unwrap();
    let again = resolve(&file, &opts).unwrap();
    assert_eq!(again, converted);
    assert_eq!(std::fs::read(&marker).unwrap(), b"kept");
    // The file itself is only read.
    assert!(file.is_file());
}

#[test]
fn missing_paths_and_wrong_kinds_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("sd15");
    let err = resolve(&missing, &ResolveOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::SourceNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("not found"), "{text}");
    for accepted in [
        "diffusers model folder",
        ".safetensors",
        "owner/name[@revision]",
    ] {
        assert!(text.contains(accepted), "{text}");
    }
    // A missing `.safetensors` path is missing, not a bad checkpoint.
    let err = resolve(tmp.path().join("m.safetensors"), &ResolveOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::SourceNotFound { .. }), "{err:?}");

    // A CLIP model must be a folder.
    let file = fixture("clip-tiny/model.safetensors");
    let err = resolve(&file, &ResolveOptions::transformers()).unwrap_err();
    assert!(matches!(err, ModelError::SourceKind { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("transformers model folder"), "{text}");
}

#[test]
fn hub_names_are_classified_not_fetched_by_parse() {
    let source = ModelSource::parse("nobody/nothing@v1").unwrap();
    assert_eq!(
        source,
        ModelSource::Hub(HubModel::parse("nobody/nothing@v1").unwrap())
    );
    assert_eq!(source.to_string(), "nobody/nothing@v1");
    assert!(!Path::new("nobody").exists());
}
