//! Parsed operations, kept by their text.
//!
//! Clients send the same few operations over and over, and parsing one costs more than
//! executing a simple one. The parse of an operation depends on nothing but its text, so
//! a parse made for one request is as good for the next; validation still runs every time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

/// Operations kept; on overflow the cache starts over, so memory stays bounded whatever
/// clients send.
const MAX_ENTRIES: usize = 256;
/// Longer operations are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 4096;

#[derive(Default)]
pub struct DocumentCache {
    parsed: Mutex<HashMap<String, Arc<ExecutableDocument>>>,
}

impl DocumentCache {
    /// Gives `request` its parsed operation from the cache, or parses it and keeps the result.
    /// A query that does not parse is left for execution to report.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        let cached = self.lock().get(&request.query).cloned();
        if let Some(document) = cached {
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = Arc::new(document.clone());
        let mut parsed = self.lock();
        if parsed.len() >= MAX_ENTRIES {
            parsed.clear();
        }
        parsed.insert(request.query.clone(), document);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        // Entries are inserted whole, so a panic elsewhere cannot leave one half-made.
        self.parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_parse_is_reused_and_the_cache_stays_bounded() {
        let cache = DocumentCache::default();
        let mut first = async_graphql::Request::new("{ me { id } }");
        cache.prepare(&mut first);
        assert_eq!(cache.lock().len(), 1);
        let mut again = async_graphql::Request::new("{ me { id } }");
        cache.prepare(&mut again);
        assert_eq!(cache.lock().len(), 1);
        assert!(again.parsed_query().is_ok());

        let mut broken = async_graphql::Request::new("{ me { ");
        cache.prepare(&mut broken);
        assert_eq!(cache.lock().len(), 1, "failed parses are not kept");

        for n in 0..MAX_ENTRIES + 10 {
            cache.prepare(&mut async_graphql::Request::new(format!("{{ f{n} }}")));
        }
        assert!(cache.lock().len() <= MAX_ENTRIES);
    }
}
