"""Board builds (Yosys/nextpnr through amaranth-boards), reports, flashing and the host driver."""
