//! The service example's end-of-run memory check passes for a short run, its two stores route
//! alike (ties included), and its command line rejects what it cannot run (the example's
//! code, with its counting allocator, compiled into this test binary).
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/service.rs"]
mod service;

use service::{ArgError, Config, Method, Route, Store};

/// The counting allocator is process-wide: runs measured by it must not overlap with anything
/// else that allocates, so every test here takes this lock.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn short_service_run_gives_its_memory_back() {
    let _alone = alone();
    let config = Config {
        seconds: if cfg!(miri) { 0.05 } else { 1.0 },
        readers: 2,
        rules: if cfg!(miri) { 20 } else { 2_000 },
        // Miri's run is too short for a rate-limited push to come; push as fast as it can.
        pushes_per_s: if cfg!(miri) { f64::INFINITY } else { Config::default().pushes_per_s },
        verbose: false,
        ..Config::default()
    };
    let summary = service::run(&config);
    assert!(summary.requests > 0 && summary.updates > 0 && summary.pushes > 0, "{summary:?}");
    assert_eq!(summary.initial_load, config.rules, "the table is loaded in one push");
    assert!(summary.peak_heap > summary.baseline_heap, "the rules were allocated");
    assert!(!summary.samples.is_empty() && summary.samples.len() <= 3, "{:?}", summary.samples);
    assert!(summary.memory_check_passes(), "kept {} bytes beyond the slot pages", summary.beyond_tables());
}

#[test]
#[cfg_attr(miri, ignore = "Miri's isolation has no file system")]
fn rules_files_load_run_and_save_with_ids_kept() {
    let _alone = alone();
    let dir = std::env::temp_dir().join(format!("rulestore-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("saved.json");
    // The sample file ships with the example: a plain array of routes.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rules.json");
    let loaded = service::load_rules(sample).unwrap();
    assert_eq!(loaded.len(), 12);
    let config = Config {
        seconds: 0.2,
        readers: 1,
        rules: 50,
        verbose: false,
        save_rules: Some(saved.to_str().unwrap().to_owned()),
        ..Config::default()
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

/// The highest priority wins, then the rule added first; a replace keeps the rule's place,
/// also when it moves the rule to another method.
fn ties_go_to_the_oldest<S: Store>() {
    let get = |prefix: &str, priority, backend| Route {
        method: Method::Get,
        prefix: prefix.into(),
        priority,
        backend,
    };
    let post =
        |prefix: &str, priority, backend| Route { method: Method::Post, ..get(prefix, priority, backend) };
    let store = S::empty();
    let (a, b) = store.push(|p| (p.add(get("/svc1", 5, 1)), p.add(get("/svc1", 5, 2))));
    store.push(|p| p.add(get("/svc1/r1", 4, 9))); // longer, but a lower priority
    assert_eq!(store.route(Method::Get, "/svc1/r1/item1"), Some(1));
    store.push(|p| assert!(p.replace(a, get("/svc1", 5, 3))));
    assert_eq!(store.route(Method::Get, "/svc1/r1/item1"), Some(3), "a replace keeps its place");
    store.push(|p| assert!(p.replace(b, get("/svc1", 6, 4))));
    assert_eq!(store.route(Method::Get, "/svc1/r1/item1"), Some(4), "a higher priority wins");
    store.push(|p| assert!(p.remove(b) && p.remove(a)));
    assert_eq!(store.route(Method::Get, "/svc1/r1/item1"), Some(9));
    // Added first as a GET, moved to POST by a replace: still older than the other POST.
    let (moved, _) = store.push(|p| (p.add(get("/svc2", 5, 20)), p.add(post("/svc2", 5, 21))));
    assert_eq!(store.route(Method::Post, "/svc2/r3/item4"), Some(21));
    store.push(|p| assert!(p.replace(moved, post("/svc2", 5, 22))));
    assert_eq!(store.route(Method::Post, "/svc2/r3/item4"), Some(22));
    assert_eq!(store.route(Method::Get, "/svc2/r3/item4"), None);
    // A push is all or nothing for a reader; a removal of a whole method takes its rules only.
    assert_eq!(store.push(|p| p.remove_kind(Method::Get)), 1);
    assert_eq!(store.live(), 2);
}

#[test]
fn both_stores_break_ties_the_same_way() {
    let _alone = alone();
    ties_go_to_the_oldest::<rulestore::RuleStore<Route>>();
    ties_go_to_the_oldest::<service::RwLockStore>();
}

#[test]
fn both_stores_route_the_same_pushes_identically() {
    let _alone = alone();
    let (rules, pushes, requests) = if cfg!(miri) { (20, 5, 50) } else { (2_000, 450, 20_000) };
    let check = service::routing_check(rules, pushes, requests).unwrap();
    assert_eq!(check.requests, requests);
    if !cfg!(miri) {
        assert!(check.ties > 100, "the check should exercise the tie-break: {check:?}");
    }
}

#[test]
fn commit_bench_measures_both_ways() {
    let _alone = alone();
    let bench = service::bench_commit::<rulestore::RuleStore<Route>>(if cfg!(miri) { 5 } else { 100 }, 1);
    assert!(bench.one_push > std::time::Duration::ZERO && bench.single_adds > std::time::Duration::ZERO);
}

#[test]
fn sizes_print_with_units() {
    let _alone = alone();
    assert_eq!(service::fmt_bytes(512.0), "512 B");
    assert_eq!(service::fmt_bytes(1536.0), "1.50 KiB");
    assert_eq!(service::fmt_bytes(21_940_779.0), "20.9 MiB");
    assert_eq!(service::fmt_signed_bytes(-192_643.0), "-188 KiB");
    assert_eq!(service::fmt_signed_bytes(1229.0), "+1.20 KiB");
    assert_eq!(service::fmt_signed_bytes(0.0), "+0 B");
}

fn parse(args: &[&str]) -> Result<Config, ArgError> {
    service::parse_args_from(args.iter().copied())
}

#[test]
fn every_bad_argument_is_rejected_with_a_message() {
    let _alone = alone();
    let cases: &[(&[&str], &str)] = &[
        (&["--readers", "0"], "--readers"),
        (&["--readers", "many"], "--readers"),
        (&["--seconds", "0"], "--seconds"),
        (&["--seconds", "-1"], "--seconds"),
        (&["--seconds", "nan"], "--seconds"),
        (&["--seconds", "inf"], "--seconds"),
        (&["--seconds", "1e12"], "at most 3600"),
        (&["--seconds"], "needs a value"),
        (&["--rules", "0"], "--rules"),
        (&["--rules", "1"], "from 2"),
        (&["--pushes-per-s", "0"], "--pushes-per-s"),
        (&["--pushes-per-s", "-3"], "--pushes-per-s"),
        (&["--pushes-per-s", "fast"], "or max"),
        (&["--store", "btree"], "epoch or rwlock"),
        (&["--plot", "--quiet"], "--plot needs a value"),
        (&["--plot="], "--plot needs a value"),
        (&["--quiet=yes"], "takes no value"),
        (&["--frobnicate"], "unknown argument"),
        (&["10"], "unknown argument"),
        (&["--metrics-addr", "0.0.0.0:9898"], "loopback"),
        (&["--metrics-addr", "port 9898"], "IP:PORT"),
        (&["--compare", "--store", "rwlock"], "--compare"),
        (&["--store", "rwlock", "--save-rules", "rules.json"], "--save-rules"),
    ];
    for (args, mentions) in cases {
        match parse(args) {
            Err(ArgError::Invalid(message)) => assert!(message.contains(mentions), "{args:?}: {message}"),
            other => panic!("{args:?} was not rejected: {other:?}"),
        }
    }
}

#[test]
fn help_is_its_own_outcome_with_every_option_and_default() {
    let _alone = alone();
    for args in [&["--help"][..], &["-h"], &["--readers", "0", "--help"]] {
        assert_eq!(parse(args), Err(ArgError::Help), "{args:?}");
    }
    let usage = service::usage();
    for option in [
        "--seconds",
        "--readers",
        "--rules",
        "--pushes-per-s",
        "--store",
        "--compare",
        "--plot",
        "--rules-file",
        "--save-rules",
        "--metrics-addr",
        "--quiet",
        "--help",
    ] {
        assert!(usage.contains(option), "--help does not describe {option}");
    }
    assert!(
        usage.contains("(default 10)") && usage.contains("(default 10000") && usage.contains("(default 100)")
    );
}

#[test]
fn good_arguments_parse() {
    let _alone = alone();
    assert_eq!(parse(&[]), Ok(Config::default()));
    let config = parse(&[
        "--seconds",
        "2.5",
        "--readers=3",
        "--rules",
        "500",
        "--pushes-per-s",
        "max",
        "--compare",
        "--quiet",
        "--metrics-addr",
        "localhost:9898",
    ])
    .unwrap();
    assert_eq!((config.seconds, config.readers, config.rules), (2.5, 3, 500));
    assert!(config.pushes_per_s.is_infinite() && config.compare && !config.verbose);
    assert_eq!(config.metrics_addr.as_deref(), Some("127.0.0.1:9898"));
    // Without --rules, a rules file sets the table's size.
    assert_eq!(parse(&["--rules-file", "rules.json"]).unwrap().rules, 0);
    assert_eq!(parse(&["--rules-file", "rules.json", "--rules", "7"]).unwrap().rules, 7);
}
