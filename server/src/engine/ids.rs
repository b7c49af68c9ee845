//! Unguessable ids for things clients hold handles to.

/// Defines a 16-byte random id type with conversions to and from the bytes
/// carried in a ticket or handle.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            pub(super) fn random() -> Self {
                Self(*uuid::Uuid::new_v4().as_bytes())
            }

            /// The id's bytes, as carried on the wire.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// Parses an id from wire bytes; `None` when they cannot be one.
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(Self)
            }
        }
    };
}

pub(super) use random_id;
