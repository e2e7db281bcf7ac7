"""Plain functions holding archq's control-plane logic; views and conductor tasks only call them."""
