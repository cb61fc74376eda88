//! Prefix tables: the one description of a layout that maps names both ways.
//!
//! A table lists `(ldm prefix, diffusers prefix, renames)` entries. A key is mapped by its
//! longest matching prefix; the rest of the name is kept, except that a leading part listed
//! in the entry's renames is swapped (`in_layers.0` ⇄ `norm1` inside a UNet resnet).

/// What happens to the part of a name after an entry's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inner {
    /// Kept as is.
    Same,
    /// Renamed by this list of `(ldm, diffusers)` leading parts.
    Renamed(&'static [(&'static str, &'static str)]),
    /// A VAE mid-block attention: renamed, and q/k/v/out weights are 1x1 convs in the
    /// LDM layout but linear weights in diffusers.
    VaeAttention,
}

/// UNet resnets: LDM `ResBlock` ⇄ diffusers `ResnetBlock2D`.
pub(crate) const UNET_RESNET: &[(&str, &str)] = &[
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];

/// VAE resnets: only the shortcut is named differently.
pub(crate) const VAE_RESNET: &[(&str, &str)] = &[("nin_shortcut", "conv_shortcut")];

/// VAE attention: LDM `AttnBlock` ⇄ diffusers `Attention`; legacy diffusers names
/// (`query`, `key`, `value`, `proj_attn`) are accepted on the diffusers side too.
pub(crate) const VAE_ATTENTION: &[(&str, &str)] = &[
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
    ("q", "query"),
    ("k", "key"),
    ("v", "value"),
    ("proj_out", "proj_attn"),
];

/// One prefix pair.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub ldm: String,
    pub diffusers: String,
    pub inner: Inner,
}

/// A layout's prefix pairs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    entries: Vec<Entry>,
}

/// A mapped name, and whether its tensor is a 1x1 conv ⇄ linear weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapped {
    pub name: String,
    pub conv_1x1: bool,
}

impl Table {
    pub fn push(&mut self, ldm: impl Into<String>, diffusers: impl Into<String>, inner: Inner) {
        self.entries.push(Entry {
            ldm: ldm.into(),
            diffusers: diffusers.into(),
            inner,
        });
    }

    /// Maps an LDM name (without the component prefix) to its diffusers name.
    pub fn to_diffusers(&self, name: &str) -> Option<Mapped> {
        let entry = self
            .entries
            .iter()
            .filter(|e| name.starts_with(&e.ldm))
            .max_by_key(|e| e.ldm.len())?;
        let rest = &name[entry.ldm.len()..];
        let (rest, conv_1x1) = rename(rest, entry.inner, true)?;
        Some(Mapped {
            name: format!("{}{}", entry.diffusers, rest),
            conv_1x1,
        })
    }

    /// Maps a diffusers name to its LDM name (without the component prefix).
    pub fn to_ldm(&self, name: &str) -> Option<Mapped> {
        let entry = self
            .entries
            .iter()
            .filter(|e| name.starts_with(&e.diffusers))
            .max_by_key(|e| e.diffusers.len())?;
        let rest = &name[entry.diffusers.len()..];
        let (rest, conv_1x1) = rename(rest, entry.inner, false)?;
        Some(Mapped {
            name: format!("{}{}", entry.ldm, rest),
            conv_1x1,
        })
    }
}

/// Renames the leading part of `rest` (`"in_layers.0.weight"`), LDM → diffusers when
/// `forward`. `None` when an entry with renames meets a name it does not list.
fn rename(rest: &str, inner: Inner, forward: bool) -> Option<(String, bool)> {
    let list = match inner {
        Inner::Same => return Some((rest.to_string(), false)),
        Inner::Renamed(list) => list,
        Inner::VaeAttention => VAE_ATTENTION,
    };
    for (ldm, diffusers) in list {
        let (from, to) = if forward {
            (ldm, diffusers)
        } else {
            (diffusers, ldm)
        };
        if let Some(tail) = rest.strip_prefix(from).and_then(|t| t.strip_prefix('.')) {
            let conv_1x1 = inner == Inner::VaeAttention && *ldm != "norm" && tail == "weight";
            return Some((format!("{to}.{tail}"), conv_1x1));
        }
    }
    match inner {
        // Resnet parts named the same in both layouts (VAE norm1/conv1/...).
        Inner::Renamed(_) => Some((rest.to_string(), false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_renames_both_ways() {
        let mut t = Table::default();
        t.push(
            "input_blocks.1.0.",
            "down_blocks.0.resnets.0.",
            Inner::Renamed(UNET_RESNET),
        );
        t.push(
            "input_blocks.1.1.",
            "down_blocks.0.attentions.0.",
            Inner::Same,
        );
        t.push(
            "mid.attn_1.",
            "mid_block.attentions.0.",
            Inner::VaeAttention,
        );
        let m = t
            .to_diffusers("input_blocks.1.0.in_layers.2.weight")
            .unwrap();
        assert_eq!(m.name, "down_blocks.0.resnets.0.conv1.weight");
        assert_eq!(
            t.to_ldm("down_blocks.0.resnets.0.conv1.weight")
                .unwrap()
                .name,
            "input_blocks.1.0.in_layers.2.weight"
        );
        let m = t.to_diffusers("input_blocks.1.1.proj_in.bias").unwrap();
        assert_eq!(m.name, "down_blocks.0.attentions.0.proj_in.bias");
        let m = t.to_diffusers("mid.attn_1.q.weight").unwrap();
        assert_eq!(
            m,
            Mapped {
                name: "mid_block.attentions.0.to_q.weight".into(),
                conv_1x1: true
            }
        );
        let m = t.to_ldm("mid_block.attentions.0.proj_attn.bias").unwrap();
        assert_eq!(m.name, "mid.attn_1.proj_out.bias");
        assert!(!m.conv_1x1);
        assert!(t.to_diffusers("mid.attn_1.bogus.weight").is_none());
        assert!(t.to_diffusers("label_emb.0.weight").is_none());
    }
}
