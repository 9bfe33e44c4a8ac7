//! The Leasehold node agent (`leasehold node run`): its Server actor, the process driver
//! and the event log. Empty until the one-site issue (#3) builds it; it exists now so the
//! workspace has the shape of the design card.
