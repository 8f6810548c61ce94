//! A map keyed by [`Region`]: one slot per region, in region order.
//!
//! There are nine regions, so a fixed array is smaller and faster than a
//! `BTreeMap<Region, V>`: each `BTreeMap` key/value type brings its own
//! copy of the tree's insert, remove, search and drop code into the `.wasm`
//! (docs/BENCHMARKS.md, *What the .wasm holds*), and a lookup here is an
//! index. Iteration is in `Region`'s order, as a `BTreeMap`'s was, so the
//! stats and saved tables keep their order. It serializes as a JSON object
//! keyed by the region's hint, like the map it replaces.

use crate::region::Region;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Slots, indexed by `Region as usize`.
const SLOTS: usize = Region::ALL.len();

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionMap<V> {
    slots: [Option<V>; SLOTS],
}

impl<V> Default for RegionMap<V> {
    fn default() -> Self {
        RegionMap { slots: std::array::from_fn(|_| None) }
    }
}

impl<V> RegionMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, region: &Region) -> Option<&V> {
        self.slots[*region as usize].as_ref()
    }

    pub fn get_mut(&mut self, region: &Region) -> Option<&mut V> {
        self.slots[*region as usize].as_mut()
    }

    pub fn contains_key(&self, region: &Region) -> bool {
        self.slots[*region as usize].is_some()
    }

    /// Sets the region's value; the one it replaces, if any, is returned.
    pub fn insert(&mut self, region: Region, value: V) -> Option<V> {
        self.slots[region as usize].replace(value)
    }

    pub fn remove(&mut self, region: &Region) -> Option<V> {
        self.slots[*region as usize].take()
    }

    /// The region's value, made with `V::default()` when it has none.
    pub fn or_default(&mut self, region: Region) -> &mut V
    where
        V: Default,
    {
        self.slots[region as usize].get_or_insert_with(V::default)
    }

    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The regions that have a value, with it, in region order.
    pub fn iter(&self) -> impl Iterator<Item = (Region, &V)> {
        Region::ALL.into_iter().zip(&self.slots).filter_map(|(r, s)| s.as_ref().map(|v| (r, v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Region, &mut V)> {
        Region::ALL.into_iter().zip(&mut self.slots).filter_map(|(r, s)| s.as_mut().map(|v| (r, v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = Region> + '_ {
        self.iter().map(|(r, _)| r)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten()
    }
}

impl<V> FromIterator<(Region, V)> for RegionMap<V> {
    /// A later value for a region replaces an earlier one, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (Region, V)>>(iter: I) -> Self {
        let mut map = RegionMap::new();
        for (region, value) in iter {
            map.insert(region, value);
        }
        map
    }
}

/// For tests only: it panics when the region has no value.
#[cfg(test)]
impl<V> std::ops::Index<&Region> for RegionMap<V> {
    type Output = V;

    fn index(&self, region: &Region) -> &V {
        self.get(region).unwrap()
    }
}

impl<V: Serialize> Serialize for RegionMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (region, value) in self.iter() {
            map.serialize_entry(region.as_str(), value)?;
        }
        map.end()
    }
}

/// The regions in a set, in region order: a `RegionMap` with no values.
pub type RegionSet = RegionMap<()>;

impl RegionSet {
    /// Adds the region; `true` when it was not there.
    pub fn add(&mut self, region: Region) -> bool {
        self.insert(region, ()).is_none()
    }

    /// Takes the region out; `true` when it was there.
    pub fn take(&mut self, region: &Region) -> bool {
        self.remove(region).is_some()
    }
}

impl FromIterator<Region> for RegionSet {
    fn from_iter<I: IntoIterator<Item = Region>>(iter: I) -> Self {
        iter.into_iter().map(|r| (r, ())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_like_a_btree_map_in_region_order() {
        let ops = [
            (Region::Me, Some(1)),
            (Region::Wnam, Some(2)),
            (Region::Weur, Some(3)),
            (Region::Me, Some(4)),
            (Region::Wnam, None),
            (Region::Afr, Some(5)),
            (Region::Sam, None),
        ];
        let (mut ours, mut theirs) = (RegionMap::new(), BTreeMap::new());
        for (region, op) in ops {
            match op {
                Some(v) => assert_eq!(ours.insert(region, v), theirs.insert(region, v)),
                None => assert_eq!(ours.remove(&region), theirs.remove(&region)),
            }
            assert_eq!(ours.iter().map(|(r, v)| (r, *v)).collect::<Vec<_>>(), theirs.iter().map(|(r, v)| (*r, *v)).collect::<Vec<_>>());
            assert_eq!(ours.len(), theirs.len());
            assert_eq!(ours.is_empty(), theirs.is_empty());
        }
        assert_eq!(ours.keys().collect::<Vec<_>>(), vec![Region::Weur, Region::Afr, Region::Me]);
        assert_eq!(ours.values().copied().collect::<Vec<_>>(), vec![3, 5, 4]);
        assert_eq!(ours[&Region::Me], 4);
        assert!(ours.contains_key(&Region::Afr) && !ours.contains_key(&Region::Oc));
        if let Some(v) = ours.get_mut(&Region::Afr) {
            *v += 10;
        }
        ours.iter_mut().for_each(|(_, v)| *v += 1);
        assert_eq!(ours.get(&Region::Afr), Some(&16));
    }

    #[test]
    fn slots_follow_the_regions_order() {
        // `iter` labels slot i with `Region::ALL[i]`; lookups index by
        // discriminant. The two must agree.
        for (i, region) in Region::ALL.into_iter().enumerate() {
            assert_eq!(region as usize, i, "{region}");
        }
    }

    #[test]
    fn serializes_as_an_object_keyed_by_hint() {
        let map: RegionMap<u64> = [(Region::Weur, 2), (Region::Enam, 1)].into_iter().collect();
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"enam":1,"weur":2}"#);
        assert_eq!(serde_json::to_string(&RegionMap::<u64>::new()).unwrap(), "{}");
    }

    #[test]
    fn a_set_adds_once() {
        let mut set = RegionSet::new();
        assert!(set.add(Region::Oc));
        assert!(!set.add(Region::Oc));
        assert_eq!(set.keys().collect::<Vec<_>>(), vec![Region::Oc]);
        assert!(set.take(&Region::Oc) && !set.take(&Region::Oc) && set.is_empty());
        let set: RegionSet = [Region::Me, Region::Wnam, Region::Me].into_iter().collect();
        assert_eq!(set.keys().collect::<Vec<_>>(), vec![Region::Wnam, Region::Me]);
        let mut counts = RegionMap::<u64>::new();
        *counts.or_default(Region::Afr) += 2;
        *counts.or_default(Region::Afr) += 1;
        assert_eq!(counts.get(&Region::Afr), Some(&3));
    }
}
