"""The RTP/SRTP media relay on the UDP port range (seed 003, "VoIP media")."""
