//! The service example's end-of-run memory check passes for a short run (the example's
//! code, with its counting allocator, compiled into this test binary).
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/service.rs"]
mod service;

#[test]
fn short_service_run_gives_its_memory_back() {
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
