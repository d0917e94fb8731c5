//! PutRecordBatch within Firehose's limits: at most 500 records and 4 MiB per call, each
//! record at most 1,000 KiB; with `simple_aggregation`, user records (each ending with `\n`)
//! joined into Firehose records up to that size.

use bytes::Bytes;

/// Most records in one PutRecordBatch call.
pub const MAX_RECORDS: usize = 500;
/// Most bytes (record data) in one call.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest Firehose record.
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// One Firehose record and the user records in it.
#[derive(Debug)]
pub struct Entry<T> {
    pub data: Bytes,
    pub tokens: Vec<T>,
    /// Retries so far.
    pub attempts: u32,
}

/// Builds calls: entries in order, cut at the call limits; with aggregation, an open record
/// collecting user records.
#[derive(Debug)]
pub struct Batcher<T> {
    aggregate: bool,
    open: Vec<u8>,
    open_tokens: Vec<T>,
    entries: Vec<Entry<T>>,
    bytes: usize,
}

impl<T> Batcher<T> {
    pub fn new(aggregate: bool) -> Batcher<T> {
        Batcher {
            aggregate,
            open: Vec::new(),
            open_tokens: Vec::new(),
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a user record; returns a full call when one is ready. The caller has checked the
    /// size (at most [`MAX_RECORD_BYTES`]).
    pub fn push(&mut self, data: &[u8], token: T) -> Option<Vec<Entry<T>>> {
        if !self.aggregate {
            return self.push_entry(Entry {
                data: Bytes::copy_from_slice(data),
                tokens: vec![token],
                attempts: 0,
            });
        }
        let mut full = None;
        if !self.open.is_empty() && self.open.len() + data.len() > MAX_RECORD_BYTES {
            full = self.close_open();
        }
        self.open.extend_from_slice(data);
        self.open_tokens.push(token);
        full
    }

    /// Adds a whole entry (a retried one); returns the call it completed, if any.
    pub fn push_entry(&mut self, entry: Entry<T>) -> Option<Vec<Entry<T>>> {
        let mut full = None;
        if self.entries.len() >= MAX_RECORDS || self.bytes + entry.data.len() > MAX_REQUEST_BYTES {
            full = self.take();
        }
        self.bytes += entry.data.len();
        self.entries.push(entry);
        if self.entries.len() >= MAX_RECORDS {
            // Only one call can be completed per push: this one goes out at the next push or
            // flush at the latest, and is handed out now when nothing was.
            if full.is_none() {
                full = self.take();
            }
        }
        full
    }

    fn close_open(&mut self) -> Option<Vec<Entry<T>>> {
        if self.open.is_empty() {
            return None;
        }
        let data = Bytes::from(std::mem::take(&mut self.open));
        let tokens = std::mem::take(&mut self.open_tokens);
        self.push_entry(Entry {
            data,
            tokens,
            attempts: 0,
        })
    }

    fn take(&mut self) -> Option<Vec<Entry<T>>> {
        self.bytes = 0;
        let entries = std::mem::take(&mut self.entries);
        (!entries.is_empty()).then_some(entries)
    }

    /// Everything waiting, as calls (at most two: the open aggregate may complete one).
    pub fn flush(&mut self) -> Vec<Vec<Entry<T>>> {
        let mut calls = Vec::new();
        calls.extend(self.close_open());
        calls.extend(self.take());
        calls
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all<T>(batcher: &mut Batcher<T>, mut calls: Vec<Vec<Entry<T>>>) -> Vec<Vec<Entry<T>>> {
        calls.extend(batcher.flush());
        calls
    }

    #[test]
    fn calls_hold_at_most_500_records_and_4_mib() {
        let mut b = Batcher::new(false);
        let mut calls = Vec::new();
        for i in 0..1200 {
            calls.extend(b.push(b"{}\n", i));
        }
        let calls = all(&mut b, calls);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 200]
        );
        let flat: Vec<usize> = calls
            .iter()
            .flatten()
            .flat_map(|e| e.tokens.clone())
            .collect();
        assert_eq!(flat, (0..1200).collect::<Vec<_>>(), "in order, each once");

        let mut b = Batcher::new(false);
        let big = vec![b'x'; MAX_RECORD_BYTES];
        let mut calls = Vec::new();
        for i in 0..9 {
            calls.extend(b.push(&big, i));
        }
        let calls = all(&mut b, calls);
        // 4 MiB / 1,000 KiB = 4.1: four records per call.
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 1]
        );
        for call in &calls {
            assert!(call.iter().map(|e| e.data.len()).sum::<usize>() <= MAX_REQUEST_BYTES);
        }
    }

    #[test]
    fn simple_aggregation_joins_records_up_to_1000_kib() {
        let mut b = Batcher::new(true);
        let line = vec![b'y'; 100 * 1024 - 1]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let mut calls = Vec::new();
        for i in 0..25 {
            calls.extend(b.push(&line, i));
        }
        let calls = all(&mut b, calls);
        let entries: Vec<&Entry<i32>> = calls.iter().flatten().collect();
        assert_eq!(
            entries.iter().map(|e| e.tokens.len()).collect::<Vec<_>>(),
            vec![10, 10, 5],
            "ten 100 KiB lines per 1,000 KiB record"
        );
        assert!(entries.iter().all(|e| e.data.len() <= MAX_RECORD_BYTES));
        assert_eq!(entries[0].data.iter().filter(|&&c| c == b'\n').count(), 10);
    }
}
