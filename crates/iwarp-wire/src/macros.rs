//! The one macro that turns a wire code point into an enum with an `Unknown` arm.

/// Declares a `Copy` enum over an integer code point, with a trailing `Unknown(raw)` arm for every
/// value the protocol leaves unassigned, plus `From` conversions in both directions.
macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Clone, Copy)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code point this crate has no name for (carried so that it can be reported).
            Unknown($ty),
        }

        impl ::core::convert::From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl ::core::convert::From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl $name {
            /// `true` unless this is the `Unknown` arm.
            pub fn is_known(self) -> bool {
                !matches!(self, $name::Unknown(_))
            }
        }
    };
}
