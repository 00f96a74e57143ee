"""poseless.data"""
