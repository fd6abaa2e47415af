//! The Siamese network of twinseal.
