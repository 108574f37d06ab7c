"""Call behaviours that act on their own schedule: re-engaging a silent caller (``silence``) and the
call duration limit (``limits``). Sans-IO: the call polls them with its clock and carries out what
they return."""
