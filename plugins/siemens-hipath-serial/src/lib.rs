//! Siemens HiPath serial plugin (work in progress).
