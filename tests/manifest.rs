//! Cargo only builds root `tests/` and `benches/` files that crates/exvit-tests lists:
//! fail when one is missing, so that no test or bench is silently skipped.

use exvit_tests::repo_root;

fn listed(manifest: &str, folder: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path = \"../../"))
        .filter_map(|p| p.strip_suffix('"'))
        .filter(|p| p.starts_with(folder))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_root_test_and_bench_is_wired_in() {
    let root = repo_root();
    let manifest = std::fs::read_to_string(root.join("crates/exvit-tests/Cargo.toml")).unwrap();
    for folder in ["tests/", "benches/"] {
        let wired = listed(&manifest, folder);
        let dir = root.join(folder);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".rs") {
                let rel = format!("{folder}{name}");
                assert!(
                    wired.contains(&rel),
                    "{rel} is not listed in crates/exvit-tests/Cargo.toml, so cargo never runs it"
                );
            }
        }
    }
}
