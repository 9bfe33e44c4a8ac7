//! Seeded fault campaigns against a real Leasehold federation (`leasehold chaos`).
//! Empty until the chaos issue (#6) builds it; it exists now so the workspace has the
//! shape of the design card.
