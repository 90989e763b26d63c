//! Fuzzes request routing: command lookup, key extraction and slot hashing on whatever
//! requests the scanner finds in arbitrary bytes.
//!
//! Checks: no panic; key indices point at real arguments; every slot is below 16384 and
//! equals an independent CRC16-XMODEM of the key's hash tag (or of the whole key).

#![no_main]

use std::ops::Range;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slotway::cluster::slot::key_slot;
use slotway::command::CommandTable;
use slotway::protocol::{inline_to_multibulk, RequestKind, RequestScanner, ScanLimits};

/// Bitwise CRC16-XMODEM (poly 0x1021, init 0), written independently of the crate's.
fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |c, _| {
            if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            }
        })
    })
}

/// The slot per the cluster spec: hash the text between the first `{` and the next `}`
/// when that text is non-empty, else the whole key.
fn reference_slot(key: &[u8]) -> u16 {
    let tag = key
        .splitn(2, |&b| b == b'{')
        .nth(1)
        .and_then(|after| after.split(|&b| b == b'}').next().map(|t| (t, after)))
        .filter(|(tag, after)| !tag.is_empty() && tag.len() < after.len())
        .map(|(tag, _)| tag);
    crc16_xmodem(tag.unwrap_or(key)) % 16384
}

fn route(table: &CommandTable, req: &[u8], args: &[Range<usize>], keys: &mut Vec<usize>) {
    let Some(spec) = table.resolve(req, args) else {
        return;
    };
    keys.clear();
    if spec.key_indices(req, args, keys).is_err() {
        return;
    }
    for &k in keys.iter() {
        let arg = args.get(k).expect("key index within the arguments");
        let key = &req[arg.clone()];
        let slot = key_slot(key);
        assert!(slot < 16384);
        assert_eq!(slot, reference_slot(key), "slot of {key:?}");
    }
}

/// Built once: building the table is far slower than routing one input.
static TABLE: OnceLock<CommandTable> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let table = TABLE.get_or_init(CommandTable::builtin);
    assert_eq!(key_slot(data), reference_slot(data));
    let mut scanner = RequestScanner::new(ScanLimits::default());
    let mut keys = Vec::new();
    let mut at = 0;
    while let Ok(Some(found)) = scanner.scan(&data[at..]) {
        let req = &data[at..at + found.len];
        match found.kind {
            RequestKind::Inline if scanner.args().is_empty() => {
                // Quoted inline: route the multibulk it rewrites to.
                let Ok(rewritten) = inline_to_multibulk(req) else {
                    break;
                };
                let mut inner = RequestScanner::new(ScanLimits::default());
                if let Ok(Some(_)) = inner.scan(&rewritten) {
                    route(table, &rewritten, inner.args(), &mut keys);
                }
            }
            RequestKind::Empty => {}
            _ => route(table, req, scanner.args(), &mut keys),
        }
        at += found.len;
    }
});
