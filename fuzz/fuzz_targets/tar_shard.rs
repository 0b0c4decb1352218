#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| exvit_tests::fuzz::run("tar_shard", data));
