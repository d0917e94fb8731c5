//! A forward connection's byte stream: frames are cut off the front as the server does and
//! every complete frame is decoded. Nothing may panic, whatever the bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use logferry::source::forward::protocol::{Decoder, FrameFinder, FrameStatus, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_decompressed_bytes: 4 << 20,
    };
    let mut finder = FrameFinder::new(&limits);
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::from(data);
    while !buf.is_empty() {
        match finder.find(&buf) {
            Ok(FrameStatus::Complete(len)) => {
                let frame = buf.split_to(len).freeze();
                if decoder.decode(frame).is_err() {
                    return;
                }
            }
            Ok(FrameStatus::Incomplete { .. }) | Err(_) => return,
        }
    }
});
