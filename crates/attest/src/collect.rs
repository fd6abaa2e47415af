//! Evidence collectors.
