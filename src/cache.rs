//! A map that stays bounded whatever clients send: when full, it starts over. For values that
//! are cheap to recompute, kept by a key a client chose (an operation's text, a token).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

pub struct BoundedCache<V> {
    capacity: usize,
    entries: Mutex<HashMap<String, V>>,
}

impl<V: Clone> BoundedCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.lock().get(key).cloned()
    }

    pub fn insert(&self, key: String, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, V>> {
        // Entries are inserted whole, so a panic elsewhere cannot leave one half-made.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
