//! Untrusted bytes as MPEG audio: the tags at both ends, the frame walk, the
//! Xing/Info/VBRI header and the pacing queries. Then, in a second pass,
//! every frame must lie inside the bytes and start with a header whose
//! length is the frame's.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loader::mp3::exercise(data);
    if let Ok(mp3) = loader::mp3::Mp3::from_bytes(data.to_vec()) {
        for (i, f) in mp3.frames().iter().enumerate() {
            assert!(f.end() <= data.len() as u64, "frame {f:?} outside {} bytes", data.len());
            let h = loader::mp3::FrameHeader::parse(mp3.frame_bytes(i)).expect("a frame starts with a header");
            assert_eq!(h.frame_len(), f.len);
        }
    }
});
