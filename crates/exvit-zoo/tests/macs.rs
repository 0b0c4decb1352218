//! Multiply-accumulates per image against PyTorch's own counter on timm's models
//! (`tests/fixtures/parity/macs.json`, from tools/parity/make_macs_fixtures.py).

use std::path::Path;

use burn_flex::{Flex, FlexDevice};
use exvit_zoo::macs::count_macs;
use exvit_zoo::{create_model, model_names, zoo_table};

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity/macs.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("macs.json")
}

#[test]
fn macs_equal_pytorchs_flop_counter_on_every_zoo_model() {
    let fixture = fixture();
    let want = fixture["macs"].as_object().expect("a `macs` object");
    // Every registered model is in the fixture (a new one needs make_macs_fixtures.py rerun).
    for name in model_names() {
        assert!(want.contains_key(name), "{name} is not in macs.json");
    }
    for (name, sizes) in want {
        let model = create_model::<Flex>(name, 1000, &FlexDevice).unwrap();
        for (size, want) in sizes.as_object().unwrap() {
            let size: usize = size.parse().unwrap();
            let got = count_macs(&model, [size, size]);
            assert_eq!(got.total, want.as_u64().unwrap(), "{name} at {size}: {:?}", got.modules);
        }
    }
}

#[test]
fn the_zoo_table_reports_macs_at_256_and_the_taps_cost_little() {
    let rows = zoo_table::<Flex>(1000, None, &FlexDevice);
    let macs = |n: &str| rows.iter().find(|r| r.name == n).unwrap().macs;
    let fixture = fixture();
    assert_eq!(macs("mobilevit_s"), fixture["macs"]["mobilevit_s"]["256"].as_u64().unwrap());
    // At another size (`exvit zoo list --size 200`).
    let at_200 = zoo_table::<Flex>(1000, Some(200), &FlexDevice);
    let s200 = at_200.iter().find(|r| r.name == "mobilevit_s").unwrap().macs;
    assert_eq!(s200, fixture["macs"]["mobilevit_s"]["200"].as_u64().unwrap());
    // The ExShortcuts' 1x1 convs are under 1% of the work (17.8 M of 2.02 G on -928).
    let model = create_model::<Flex>("exmobilevit_928", 1000, &FlexDevice).unwrap();
    let m = count_macs(&model, [256, 256]);
    let taps = m.modules.iter().find(|(k, _)| k == "exshortcuts").unwrap().1;
    assert_eq!(taps, 96 * 128 * 32 * 32 + 128 * 160 * 16 * 16);
    assert_eq!(m.modules.iter().find(|(k, _)| k == "head").unwrap().1, 928 * 1000);
    assert!(taps * 100 < m.total, "{taps} of {}", m.total);
}
