//! Host-side evidence: pid → netns, resolv.conf a process sees, netns cookies.
