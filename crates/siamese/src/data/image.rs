//! Decoding and resizing single images.

use crate::{Error, Result};

/// The pixels an image will decode to, read from its header alone (PNG
/// or JPEG; raw grey bytes of `height * width` count as that many), so
/// that callers can refuse work before decoding anything.
pub fn image_pixels(bytes: &[u8], height: usize, width: usize, name: &str) -> Result<u64> {
    let Some(format) = encoded_format(bytes, height, width, name)? else {
        return Ok((height * width) as u64);
    };
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| image_error(name, format!("cannot read the header: {e}")))?;
    Ok(u64::from(w) * u64::from(h))
}

fn image_error(name: &str, detail: String) -> Error {
    Error::Image {
        path: name.to_string(),
        detail,
    }
}

/// PNG or JPEG from the header; `None` for raw grey pixels of the model's
/// size; an error for anything else.
fn encoded_format(
    bytes: &[u8],
    height: usize,
    width: usize,
    name: &str,
) -> Result<Option<image::ImageFormat>> {
    let guessed = image::guess_format(bytes);
    if bytes.len() == height * width && guessed.is_err() {
        return Ok(None);
    }
    let format = guessed.map_err(|_| {
        image_error(
            name,
            "not a PNG or JPEG image (nor raw grey pixels of the model's size)".into(),
        )
    })?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(image_error(
            name,
            format!("unsupported image format {format:?} (PNG or JPEG expected)"),
        ));
    }
    Ok(Some(format))
}

/// Decodes a PNG or JPEG (any size, any colour type) to grey pixels in 0..1
/// resized to `height x width`; or takes `height * width` raw bytes as grey
/// pixels (0..255) directly. `name` is only used in errors.
pub fn decode_image(bytes: &[u8], height: usize, width: usize, name: &str) -> Result<Vec<f32>> {
    let err = |detail: String| image_error(name, detail);
    let Some(format) = encoded_format(bytes, height, width, name)? else {
        return Ok(bytes.iter().map(|&b| b as f32 / 255.0).collect());
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // Bound what a hostile header can make us allocate (64 Mpixel grey).
    limits.max_alloc = Some(256 << 20);
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| err(format!("cannot decode: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err("empty image".into()));
    }
    let grey = img.to_luma8();
    Ok(resize_grey(&grey, height, width))
}

/// Resizes a grey image to `height x width` (triangle filter) and scales to 0..1.
pub fn resize_grey(img: &image::GrayImage, height: usize, width: usize) -> Vec<f32> {
    let resized = if (img.height() as usize, img.width() as usize) == (height, width) {
        img.clone()
    } else {
        image::imageops::resize(
            img,
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    resized.as_raw().iter().map(|&b| b as f32 / 255.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + y) * 4) as u8]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn any_size_png_becomes_model_size() {
        let px = decode_image(&png(64, 40), 28, 28, "a.png").unwrap();
        assert_eq!(px.len(), 784);
        assert!(px.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn raw_pixels_pass_through() {
        let raw: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
        let px = decode_image(&raw, 28, 28, "raw").unwrap();
        assert_eq!(px[255], 1.0);
    }

    #[test]
    fn malformed_images_are_clear_errors() {
        let mut broken = png(28, 28);
        broken.truncate(40);
        let e = decode_image(&broken, 28, 28, "broken.png")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broken.png") && e.contains("cannot decode"),
            "{e}"
        );
        let e = decode_image(b"hello", 28, 28, "x.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PNG or JPEG"), "{e}");
    }
}
