//! Sealed training datasets on arbitrary bytes: the public index parser
//! (`ArchiveIndex::from_json`), and the archive reader (`read_archive`: tar
//! stream, index check, image decoding, counts) under a fixed valid index
//! and under an index taken from the input itself. None may panic; an
//! archive that reads must match its index.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_siamese::data::archive::{ArchiveIndex, read_archive};

const INDEX: &[u8] = br#"{"format":"twinseal-dataset/1","kind":"folders","identities":[{"name":"a","images":1},{"name":"b","images":1}],"images":2}"#;

fuzz_target!(|data: &[u8]| {
    let _ = ArchiveIndex::from_json(data);
    if let Ok(ds) = read_archive(data, INDEX, "fuzz", 28, 28) {
        assert_eq!(ds.train.len() + ds.test.len(), 2);
    }
    // First byte: where the input splits into (index, archive).
    if let Some((&cut, rest)) = data.split_first() {
        let cut = (cut as usize * 4).min(rest.len());
        let (index, archive) = rest.split_at(cut);
        if let Ok(ds) = read_archive(archive, index, "fuzz", 28, 28) {
            let parsed = ArchiveIndex::from_json(index).expect("read_archive checked it");
            assert_eq!(
                (ds.train.len() + ds.test.len()) as u64,
                parsed.images,
                "an archive that reads holds what its index says"
            );
        }
    }
});
