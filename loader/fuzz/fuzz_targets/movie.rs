//! Untrusted bytes as a movie: the box walk, the sample tables, the SDP, and
//! every packet recipe of every hint track, merged and after a seek. Then, in
//! a second pass, every payload span must lie inside the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loader::exercise(data);
    if let Ok(movie) = loader::Movie::from_bytes(data.to_vec()) {
        for p in movie.all_packets().flatten() {
            for s in &p.payload {
                assert!(s.end() <= data.len() as u64, "span {s:?} outside {} bytes", data.len());
            }
        }
    }
});
