//! Messages for the user, shared by every part of the page: errors stay until
//! dismissed, information replaces the previous message.

use leptos::prelude::*;

/// A message for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// The message line, through context.
#[derive(Clone, Copy)]
pub struct Notices {
    pub current: RwSignal<Option<Notice>>,
}

impl Default for Notices {
    fn default() -> Self {
        Notices::new()
    }
}

impl Notices {
    pub fn new() -> Notices {
        Notices {
            current: RwSignal::new(None),
        }
    }

    pub fn info(&self, text: impl Into<String>) {
        self.current.set(Some(Notice {
            error: false,
            text: text.into(),
        }));
    }

    pub fn error(&self, text: impl Into<String>) {
        self.current.set(Some(Notice {
            error: true,
            text: text.into(),
        }));
    }

    pub fn dismiss(&self) {
        self.current.set(None);
    }
}
