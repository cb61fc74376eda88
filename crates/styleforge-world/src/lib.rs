//! The toy world: small captioned scenes in seven procedural styles, deterministic from a
//! seed, for training and testing StyleForge end to end on a CPU.
//!
//! A scene ([`scene`]) is one or two objects (person, house, tree, sun, cat, car), each
//! with a colour word, standing on grass, sand or snow under a day, sunset or night sky.
//! It is drawn flat into a canvas with per-part labels ([`render::Canvas`]) and then
//! rendered in a style ([`Style`]): plain, pixel art, sketch, watercolor (the **base**
//! styles a base model is pretrained on) or cel, cubist, pointillist (**held out**, for
//! personalization to learn). Captions ([`caption()`]) are plain English built only from
//! single CLIP tokens: `"a red house and a yellow sun on grass at sunset, sketch style"`.
//!
//! ```
//! use styleforge_world::{render, Style, World};
//!
//! let world = World::new(7).with_styles(&Style::BASE);
//! let sample = world.sample(0);
//! assert_eq!(sample.image.dimensions(), (32, 32));
//! assert!(sample.caption.ends_with(&sample.style.phrase()));
//! // The same scene in a held-out style, at 64×64:
//! let cel = render(&sample.scene, Style::Cel, 64, 1);
//! assert_eq!(cel.dimensions(), (64, 64));
//! ```
//!
//! Everything is a pure function of its seeds: [`World::sample`]`(i)` depends only on the
//! world's seed and `i`, and [`render()`] on its arguments. The design follows pictures of a
//! throw-away PyTorch experiment (`shared/reference/toy-world/`) without porting its code.

#![warn(missing_docs)]

pub mod caption;
pub mod dataset;
pub mod render;
pub mod scene;
pub mod style;

pub use caption::{caption, caption_with_style_word, content_caption};
pub use dataset::{CaptionKind, Sample, World};
pub use render::{render, DEFAULT_SIZE};
pub use scene::{Colour, Ground, ObjectKind, Scene, SceneObject, SceneSampler, Sky, Slot};
pub use style::Style;
