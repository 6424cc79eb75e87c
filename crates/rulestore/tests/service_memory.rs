//! The service example's end-of-run memory check passes for a short run (the example's
//! code, with its counting allocator, compiled into this test binary).
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/service.rs"]
mod service;

/// The counting allocator is process-wide: runs measured by it must not overlap.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn short_service_run_gives_its_memory_back() {
    let _alone = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let config = service::Config {
        seconds: if cfg!(miri) { 0.05 } else { 1.0 },
        readers: 2,
        rules: if cfg!(miri) { 20 } else { 2_000 },
        verbose: false,
        ..service::Config::default()
    };
    let summary = service::run(&config);
    assert!(summary.requests > 0 && summary.updates > 0, "{summary:?}");
    assert!(summary.peak_heap > summary.baseline_heap, "the rules were allocated");
    assert!(summary.memory_check_passes(), "kept {} bytes beyond the slot pages", summary.beyond_tables());
}

#[test]
#[cfg_attr(miri, ignore = "Miri's isolation has no file system")]
fn rules_files_load_run_and_save_with_ids_kept() {
    let _alone = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::temp_dir().join(format!("rulestore-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("saved.json");
    // The sample file ships with the example: a plain array of routes.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rules.json");
    let loaded = service::load_rules(sample).unwrap();
    assert_eq!(loaded.len(), 12);
    let config = service::Config {
        seconds: 0.2,
        readers: 1,
        rules: 50,
        verbose: false,
        save_rules: Some(saved.to_str().unwrap().to_owned()),
        ..service::Config::default()
    };
    let summary = service::run_with(&config, Some(&loaded));
    assert!(summary.memory_check_passes(), "kept {} bytes", summary.beyond_tables());
    // The saved snapshot restores with the same ids and routes.
    let restored = service::load_rules(saved.to_str().unwrap()).unwrap();
    assert!(!restored.is_empty());
    let again = serde_json::to_string(&restored).unwrap();
    assert_eq!(again, std::fs::read_to_string(&saved).unwrap(), "a restored snapshot saves identically");
    // Unreadable or malformed files are clean errors.
    assert!(service::load_rules(dir.join("missing.json").to_str().unwrap()).is_err());
    std::fs::write(dir.join("bad.json"), r#"[{"method": "Fetch"}]"#).unwrap();
    assert!(service::load_rules(dir.join("bad.json").to_str().unwrap()).unwrap_err().contains("Fetch"));
    std::fs::remove_dir_all(&dir).unwrap();
}
